//! Opaque page tokens: URL-safe base64 (no padding) of a small versioned JSON
//! document. A token is bound to the request it continues: the filters of a
//! `ListOrders` call, the order of a `GetOrderHistory` call. Anything else (bad
//! base64 or JSON, another version, other filters) is refused as invalid.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only token format this build writes and reads.
const VERSION: u32 = 1;

/// Why a page token was refused; the text is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    /// Not URL-safe base64, or not our JSON.
    #[error("is not a page token issued by this service")]
    Malformed,
    /// Written by another format version.
    #[error("has an unsupported version")]
    UnsupportedVersion,
    /// Issued for other filters or another order.
    #[error("was issued for a different request")]
    Mismatch,
}

/// The filters a `ListOrders` token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Only this customer's orders.
    pub customer_id: Option<String>,
    /// Only orders in this status (the read model's status name).
    pub status: Option<String>,
}

/// Where the next `ListOrders` page starts: strictly after this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrdersCursor {
    /// `placed_at` of the last order returned, in microseconds since the epoch.
    pub placed_at_micros: i64,
    /// `order_id` of the last order returned.
    pub order_id: Uuid,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k", deny_unknown_fields)]
enum Body {
    #[serde(rename = "orders")]
    Orders {
        v: u32,
        placed_at: i64,
        order_id: String,
        filter: ListFilter,
    },
    #[serde(rename = "history")]
    History {
        v: u32,
        order_id: String,
        after_version: u64,
    },
}

fn encode(body: &Body) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(body).expect("a token body serialises"))
}

fn decode(token: &str) -> Result<Body, PageTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| PageTokenError::Malformed)?;
    let version = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|_| PageTokenError::Malformed)?
        .get("v")
        .and_then(serde_json::Value::as_u64);
    match version {
        Some(v) if v == u64::from(VERSION) => {}
        Some(_) => return Err(PageTokenError::UnsupportedVersion),
        None => return Err(PageTokenError::Malformed),
    }
    serde_json::from_slice(&bytes).map_err(|_| PageTokenError::Malformed)
}

/// The token continuing a `ListOrders` call with `filter` after `cursor`.
pub fn encode_orders(filter: &ListFilter, cursor: OrdersCursor) -> String {
    encode(&Body::Orders {
        v: VERSION,
        placed_at: cursor.placed_at_micros,
        order_id: cursor.order_id.to_string(),
        filter: filter.clone(),
    })
}

/// The cursor of a `ListOrders` token, if it was issued for `filter`.
pub fn decode_orders(token: &str, filter: &ListFilter) -> Result<OrdersCursor, PageTokenError> {
    match decode(token)? {
        Body::Orders {
            placed_at,
            order_id,
            filter: issued_for,
            ..
        } if &issued_for == filter => Ok(OrdersCursor {
            placed_at_micros: placed_at,
            order_id: Uuid::parse_str(&order_id).map_err(|_| PageTokenError::Malformed)?,
        }),
        _ => Err(PageTokenError::Mismatch),
    }
}

/// The token continuing a `GetOrderHistory` call of `order_id` after `version`.
pub fn encode_history(order_id: Uuid, after_version: u64) -> String {
    encode(&Body::History {
        v: VERSION,
        order_id: order_id.to_string(),
        after_version,
    })
}

/// The version a `GetOrderHistory` token continues after, if issued for `order_id`.
pub fn decode_history(token: &str, order_id: Uuid) -> Result<u64, PageTokenError> {
    match decode(token)? {
        Body::History {
            order_id: issued_for,
            after_version,
            ..
        } if Uuid::parse_str(&issued_for).ok() == Some(order_id) => Ok(after_version),
        _ => Err(PageTokenError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(customer: Option<&str>, status: Option<&str>) -> ListFilter {
        ListFilter {
            customer_id: customer.map(str::to_owned),
            status: status.map(str::to_owned),
        }
    }

    fn cursor() -> OrdersCursor {
        OrdersCursor {
            placed_at_micros: 1_700_000_000_123_456,
            order_id: Uuid::now_v7(),
        }
    }

    #[test]
    fn an_orders_token_round_trips_for_the_same_filters() {
        let f = filter(Some("ann"), Some("placed"));
        let c = cursor();
        let token = encode_orders(&f, c);
        assert!(!token.contains('='), "no padding");
        assert_eq!(decode_orders(&token, &f), Ok(c));
    }

    #[test]
    fn an_orders_token_is_refused_for_other_filters() {
        let token = encode_orders(&filter(Some("ann"), None), cursor());
        for other in [
            filter(Some("bob"), None),
            filter(None, None),
            filter(Some("ann"), Some("placed")),
        ] {
            assert_eq!(decode_orders(&token, &other), Err(PageTokenError::Mismatch));
        }
    }

    #[test]
    fn a_history_token_is_bound_to_its_order() {
        let order = Uuid::now_v7();
        let token = encode_history(order, 50);
        assert_eq!(decode_history(&token, order), Ok(50));
        assert_eq!(
            decode_history(&token, Uuid::now_v7()),
            Err(PageTokenError::Mismatch)
        );
        assert_eq!(
            decode_orders(&token, &filter(None, None)),
            Err(PageTokenError::Mismatch)
        );
    }

    #[test]
    fn garbage_and_tampered_tokens_are_malformed() {
        let f = filter(None, None);
        assert_eq!(decode_orders("%%%", &f), Err(PageTokenError::Malformed));
        let not_json = URL_SAFE_NO_PAD.encode(b"hello");
        assert_eq!(decode_orders(&not_json, &f), Err(PageTokenError::Malformed));
        let mut token = encode_orders(&f, cursor()).into_bytes();
        token[3] = if token[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(token).unwrap();
        assert!(decode_orders(&tampered, &f).is_err());
        let extra = URL_SAFE_NO_PAD.encode(
            br#"{"k":"history","v":1,"order_id":"0192f6e4-7b1c-7a00-8000-000000000001","after_version":1,"x":1}"#,
        );
        assert_eq!(
            decode_history(
                &extra,
                "0192f6e4-7b1c-7a00-8000-000000000001".parse().unwrap()
            ),
            Err(PageTokenError::Malformed)
        );
    }

    #[test]
    fn a_token_of_another_version_is_refused() {
        let v2 = URL_SAFE_NO_PAD.encode(br#"{"k":"orders","v":2,"anything":true}"#);
        assert_eq!(
            decode_orders(&v2, &filter(None, None)),
            Err(PageTokenError::UnsupportedVersion)
        );
    }
}
