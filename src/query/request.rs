//! The query requests parsed at the edge: order ids, list filters and page
//! tokens, into what the reads take. Pure, so that the property tests run
//! every request through it without a database.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    codec,
    domain::{CustomerId, OrderId, OrderStatus},
    proto,
    query::{
        QueryError,
        page_token::{self, ListFilter, OrdersCursor},
        read_model::status_name,
    },
};

/// A required order id.
pub fn order_id(raw: &str) -> Result<Uuid, QueryError> {
    if raw.is_empty() {
        return Err(QueryError::invalid("order_id", "is required"));
    }
    OrderId::parse(raw)
        .map(|id| id.as_uuid())
        .map_err(|e| QueryError::invalid("order_id", e.0))
}

/// Which state of the order a `GetOrder` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    /// As projected now.
    Latest,
    /// As projected now, once at least this version (read-your-writes).
    MinVersion(u64),
    /// As it was at this version.
    Version(u64),
    /// As it was at this instant.
    Time(DateTime<Utc>),
}

/// The order and the state a `GetOrder` asks for. `min_version`,
/// `as_of_version` and `as_of_time` exclude one another; `min_version: 0`
/// is the same as none.
pub fn get_order(request: &proto::GetOrderRequest) -> Result<(Uuid, ReadAt), QueryError> {
    let order_id = order_id(&request.order_id)?;
    let min_version = request.min_version.filter(|&v| v > 0);
    let set = [
        min_version.is_some(),
        request.as_of_version.is_some(),
        request.as_of_time.is_some(),
    ];
    if set.iter().filter(|&&s| s).count() > 1 {
        let field = if request.as_of_version.is_some() && min_version.is_some() {
            "as_of_version"
        } else {
            "as_of_time"
        };
        return Err(QueryError::invalid(
            field,
            "at most one of min_version, as_of_version and as_of_time may be set",
        ));
    }
    let at = match (min_version, request.as_of_version, &request.as_of_time) {
        (Some(v), _, _) => ReadAt::MinVersion(v),
        (_, Some(v), _) => ReadAt::Version(v),
        (_, _, Some(t)) => ReadAt::Time(
            DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(u32::MAX))
                .ok_or_else(|| QueryError::invalid("as_of_time", "is not a valid timestamp"))?,
        ),
        _ => ReadAt::Latest,
    };
    Ok((order_id, at))
}

/// The filter of a `ListOrders` call and, past its first page, where it
/// continues. A caller `confined` to a customer lists that customer's orders,
/// whatever the request names.
pub fn list_orders(
    request: &proto::ListOrdersRequest,
    confined: Option<&CustomerId>,
) -> Result<(ListFilter, Option<OrdersCursor>), QueryError> {
    let requested = request
        .customer_id
        .as_ref()
        .map(|c| {
            CustomerId::parse(c)
                .map(|c| c.as_str().to_owned())
                .map_err(|e| QueryError::invalid("customer_id", e.0))
        })
        .transpose()?;
    let customer_id = confined.map(|c| c.as_str().to_owned()).or(requested);
    let status = proto::OrderStatus::try_from(request.status)
        .map_err(|_| QueryError::invalid("status", "is not an OrderStatus"))?;
    let filter = ListFilter {
        customer_id,
        status: codec::status_from_proto(status).map(|s| status_name(s).to_owned()),
    };
    let cursor = if request.page_token.is_empty() {
        None
    } else {
        Some(
            page_token::decode_orders(&request.page_token, &filter)
                .map_err(|e| QueryError::invalid("page_token", e.to_string()))?,
        )
    };
    Ok((filter, cursor))
}

/// The customer and status of a `WatchOrders` call. A caller `confined` to a
/// customer watches that customer's orders, whatever the request names.
pub fn watch_orders(
    request: &proto::WatchOrdersRequest,
    confined: Option<&CustomerId>,
) -> Result<(CustomerId, Option<OrderStatus>), QueryError> {
    let customer = match confined {
        Some(customer) => customer.clone(),
        None if request.customer_id.is_empty() => {
            return Err(QueryError::invalid("customer_id", "is required"));
        }
        None => CustomerId::parse(&request.customer_id)
            .map_err(|e| QueryError::invalid("customer_id", e.0))?,
    };
    let status = proto::OrderStatus::try_from(request.status)
        .map_err(|_| QueryError::invalid("status", "is not an OrderStatus"))?;
    Ok((customer, codec::status_from_proto(status)))
}

/// The order of a `GetOrderHistory` call and the version its page starts after.
pub fn history(request: &proto::GetOrderHistoryRequest) -> Result<(Uuid, u64), QueryError> {
    let order_id = order_id(&request.order_id)?;
    let after = if request.page_token.is_empty() {
        0
    } else {
        page_token::decode_history(&request.page_token, order_id)
            .map_err(|e| QueryError::invalid("page_token", e.to_string()))?
    };
    Ok((order_id, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        min_version: Option<u64>,
        as_of_version: Option<u64>,
        as_of_time: Option<prost_types::Timestamp>,
    ) -> proto::GetOrderRequest {
        proto::GetOrderRequest {
            order_id: "0b6f7c1e-5d2a-4c3b-9f10-2a4e6d8c0b11".into(),
            min_version,
            as_of_version,
            as_of_time,
        }
    }

    #[test]
    fn a_watch_of_orders_names_a_customer_unless_the_caller_is_confined_to_one() {
        let watch = |customer: &str, status: proto::OrderStatus| proto::WatchOrdersRequest {
            customer_id: customer.into(),
            status: status as i32,
        };
        let own = CustomerId::parse("own").unwrap();
        assert_eq!(
            watch_orders(&watch("c-1", proto::OrderStatus::Placed), None).unwrap(),
            (CustomerId::parse("c-1").unwrap(), Some(OrderStatus::Placed))
        );
        assert_eq!(
            watch_orders(&watch("c-1", proto::OrderStatus::Unspecified), Some(&own)).unwrap(),
            (own.clone(), None)
        );
        assert_eq!(
            watch_orders(&watch("", proto::OrderStatus::Unspecified), Some(&own)).unwrap(),
            (own, None)
        );
        for bad in [
            watch("", proto::OrderStatus::Unspecified),
            watch("\u{7}", proto::OrderStatus::Unspecified),
            proto::WatchOrdersRequest {
                customer_id: "c-1".into(),
                status: 99,
            },
        ] {
            assert!(matches!(
                watch_orders(&bad, None),
                Err(QueryError::InvalidArgument { .. })
            ));
        }
    }

    #[test]
    fn a_get_order_asks_for_one_state_at_most() {
        let at = |r| get_order(&r).map(|(_, at)| at);
        assert_eq!(at(request(None, None, None)).unwrap(), ReadAt::Latest);
        assert_eq!(at(request(Some(0), None, None)).unwrap(), ReadAt::Latest);
        assert_eq!(
            at(request(Some(3), None, None)).unwrap(),
            ReadAt::MinVersion(3)
        );
        assert_eq!(
            at(request(Some(0), Some(2), None)).unwrap(),
            ReadAt::Version(2)
        );
        let noon = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 5_000,
        };
        assert_eq!(
            at(request(None, None, Some(noon))).unwrap(),
            ReadAt::Time(DateTime::from_timestamp(1_800_000_000, 5_000).unwrap())
        );
        for both in [
            request(Some(1), Some(1), None),
            request(None, Some(1), Some(noon)),
            request(Some(1), None, Some(noon)),
        ] {
            assert!(matches!(
                get_order(&both),
                Err(QueryError::InvalidArgument { .. })
            ));
        }
        let invalid = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(matches!(
            get_order(&request(None, None, Some(invalid))),
            Err(QueryError::InvalidArgument {
                field: "as_of_time",
                ..
            })
        ));
    }
}
