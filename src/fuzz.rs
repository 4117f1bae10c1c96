//! Property tests over arbitrary requests, run in `cargo test` with a fixed
//! number of cases: arbitrary bytes decoded as every request type of both
//! services, and arbitrary well-typed requests, go through the same parsing
//! the servers run (`ParsedCommand`, `query::request`, page tokens, the
//! correlation metadata). Nothing panics, and every refusal maps to a status
//! whose error metadata fits `MAX_ERROR_METADATA_BYTES`.

use proptest::{prelude::*, test_runner::Config};
use prost::Message;
use tonic::{Code, Status, codegen::http};

use crate::{
    codec::{InvalidRequest, ParsedCommand},
    command::CommandError,
    limits::{MAX_ERROR_METADATA_BYTES, correlation},
    proto,
    query::{QueryError, page_token, request},
};

/// Cases per property: a few seconds in a debug build.
fn config() -> Config {
    Config {
        cases: 2_000,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Bytes of the error metadata a refusal sends.
fn error_metadata_bytes(status: Status) -> usize {
    let response: http::Response<()> = status.into_http();
    ["grpc-message", "grpc-status-details-bin"]
        .iter()
        .filter_map(|name| response.headers().get(*name))
        .map(|value| value.len())
        .sum()
}

fn command_refusal(result: Result<ParsedCommand, InvalidRequest>) -> Result<(), TestCaseError> {
    if let Err(invalid) = result {
        prop_assert!(!invalid.0.is_empty());
        let status = Status::from(CommandError::Invalid(invalid));
        prop_assert_eq!(status.code(), Code::InvalidArgument);
        let bytes = error_metadata_bytes(status);
        prop_assert!(bytes < MAX_ERROR_METADATA_BYTES, "{} bytes", bytes);
    }
    Ok(())
}

fn query_refusal<T>(result: Result<T, QueryError>) -> Result<(), TestCaseError> {
    if let Err(error) = result {
        let status = Status::from(error);
        prop_assert_eq!(status.code(), Code::InvalidArgument);
        let bytes = error_metadata_bytes(status);
        prop_assert!(bytes < MAX_ERROR_METADATA_BYTES, "{} bytes", bytes);
    }
    Ok(())
}

/// Runs `check` on `bytes` decoded as `R`, when they decode.
fn decoded<R: Message + Default>(
    bytes: &[u8],
    check: impl FnOnce(&R) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    match R::decode(bytes) {
        Ok(request) => check(&request),
        Err(_) => Ok(()),
    }
}

/// Text of every kind a field may meet: empty, plain, at and past the length
/// limits, control characters, any Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,70}",
        "\\PC{60,70}",
        "[\t\n a-z]{0,10}",
        any::<String>(),
        "[A-Z]{3}",
    ]
}

/// Order ids: valid, nil, other forms, garbage.
fn order_id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        Just(uuid::Uuid::nil().to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).urn().to_string()),
        text(),
    ]
}

fn line() -> impl Strategy<Value = proto::OrderLine> {
    (text(), any::<u32>(), any::<i64>()).prop_map(|(product_id, quantity, unit_price_minor)| {
        proto::OrderLine {
            product_id,
            quantity: quantity % 20_000,
            unit_price_minor,
        }
    })
}

fn place_order() -> impl Strategy<Value = proto::PlaceOrderRequest> {
    (
        text(),
        order_id(),
        text(),
        text(),
        prop::collection::vec(line(), 0..=130),
    )
        .prop_map(
            |(request_id, order_id, customer_id, currency_code, lines)| proto::PlaceOrderRequest {
                request_id,
                order_id,
                customer_id,
                currency_code,
                lines,
            },
        )
}

/// Page tokens: garbage, base64 of anything, tokens issued for other calls.
fn page_token() -> impl Strategy<Value = String> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    prop_oneof![
        text(),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        (any::<u128>(), any::<u64>()).prop_map(|(order, after)| {
            page_token::encode_history(uuid::Uuid::from_u128(order), after)
        }),
        (
            any::<i64>(),
            any::<u128>(),
            proptest::option::of("[a-z]{1,8}")
        )
            .prop_map(|(at, order, customer)| page_token::encode_orders(
                &page_token::ListFilter {
                    customer_id: customer,
                    status: None,
                },
                page_token::OrdersCursor {
                    placed_at_micros: at,
                    order_id: uuid::Uuid::from_u128(order),
                },
            )),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_as_any_request_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4_096)) {
        decoded::<proto::PlaceOrderRequest>(&bytes, |r| command_refusal(ParsedCommand::try_from(r)))?;
        decoded::<proto::AddOrderLineRequest>(&bytes, |r| command_refusal(ParsedCommand::try_from(r)))?;
        decoded::<proto::RemoveOrderLineRequest>(&bytes, |r| command_refusal(ParsedCommand::try_from(r)))?;
        decoded::<proto::ConfirmOrderRequest>(&bytes, |r| command_refusal(ParsedCommand::try_from(r)))?;
        decoded::<proto::ShipOrderRequest>(&bytes, |r| command_refusal(ParsedCommand::try_from(r)))?;
        decoded::<proto::CancelOrderRequest>(&bytes, |r| command_refusal(ParsedCommand::try_from(r)))?;
        decoded::<proto::GetOrderRequest>(&bytes, |r| query_refusal(request::order_id(&r.order_id)))?;
        decoded::<proto::ListOrdersRequest>(&bytes, |r| query_refusal(request::list_orders(r, None)))?;
        decoded::<proto::GetOrderHistoryRequest>(&bytes, |r| query_refusal(request::history(r)))?;
    }

    #[test]
    fn arbitrary_place_orders_are_parsed_or_refused_within_budget(request in place_order()) {
        command_refusal(ParsedCommand::try_from(&request))?;
    }

    #[test]
    fn arbitrary_commands_on_an_order_are_parsed_or_refused_within_budget(
        request_id in text(),
        order_id in order_id(),
        expected_version in proptest::option::of(any::<u64>()),
        line in proptest::option::of(line()),
        other in text(),
    ) {
        command_refusal(ParsedCommand::try_from(&proto::AddOrderLineRequest {
            request_id: request_id.clone(), order_id: order_id.clone(), expected_version, line,
        }))?;
        command_refusal(ParsedCommand::try_from(&proto::RemoveOrderLineRequest {
            request_id: request_id.clone(), order_id: order_id.clone(), expected_version, product_id: other.clone(),
        }))?;
        command_refusal(ParsedCommand::try_from(&proto::ConfirmOrderRequest {
            request_id: request_id.clone(), order_id: order_id.clone(), expected_version,
        }))?;
        command_refusal(ParsedCommand::try_from(&proto::ShipOrderRequest {
            request_id: request_id.clone(), order_id: order_id.clone(), expected_version, tracking_number: other.clone(),
        }))?;
        command_refusal(ParsedCommand::try_from(&proto::CancelOrderRequest {
            request_id, order_id, expected_version, reason: other,
        }))?;
    }

    #[test]
    fn arbitrary_queries_are_parsed_or_refused_within_budget(
        order_id in order_id(),
        customer_id in proptest::option::of(text()),
        status in any::<i32>(),
        page_size in any::<u32>(),
        page_token in page_token(),
    ) {
        query_refusal(request::order_id(&order_id))?;
        query_refusal(request::list_orders(&proto::ListOrdersRequest {
            customer_id, status: status % 8, page_size, page_token: page_token.clone(),
        }, None))?;
        query_refusal(request::history(&proto::GetOrderHistoryRequest {
            order_id, page_size, page_token,
        }))?;
    }

    #[test]
    fn arbitrary_correlation_metadata_is_read_or_refused_within_budget(
        request_id in prop::collection::vec(any::<u8>(), 0..300),
        traceparent in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            "00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}".prop_map(String::into_bytes),
        ],
    ) {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [(correlation::REQUEST_ID, request_id), (correlation::TRACEPARENT, traceparent)] {
            if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                headers.insert(name, value);
            }
        }
        match correlation::read(&headers) {
            Ok(read) => {
                prop_assert!(read.request_id.is_none_or(|id| id.len() <= correlation::MAX_REQUEST_ID_LEN));
                prop_assert!(read.traceparent.is_none_or(|t| t.len() == 55));
            }
            Err(invalid) => {
                let bytes = error_metadata_bytes(invalid.into());
                prop_assert!(bytes < MAX_ERROR_METADATA_BYTES, "{} bytes", bytes);
            }
        }
    }
}
