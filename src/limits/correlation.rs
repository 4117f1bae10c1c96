//! Correlation metadata of a request (`x-request-id`, W3C `traceparent`),
//! checked before anything logs it, stores it with events or forwards it to
//! Kafka: a client cannot put kilobytes of arbitrary text into every log line
//! and event. An invalid value is refused with INVALID_ARGUMENT naming the
//! header; an absent or empty one is simply absent.

use tonic::{Code, Status, codegen::http::HeaderMap};
use tonic_types::{ErrorDetails, StatusExt};

/// The client's request id header, stored as the events' correlation id.
pub const REQUEST_ID: &str = "x-request-id";
/// The W3C trace context header, stored with the events and sent to Kafka.
pub const TRACEPARENT: &str = "traceparent";
/// The longest `x-request-id` accepted, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// What a span logs in place of an invalid value.
const INVALID: &str = "(invalid)";

/// A correlation header that is not what its format says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} metadata: {description}")]
pub struct InvalidHeader {
    /// The header's name.
    pub header: &'static str,
    /// What the value must look like.
    pub description: &'static str,
}

impl From<InvalidHeader> for Status {
    fn from(invalid: InvalidHeader) -> Self {
        Status::with_error_details(
            Code::InvalidArgument,
            invalid.to_string(),
            ErrorDetails::with_bad_request_violation(invalid.header, invalid.description),
        )
    }
}

/// The correlation metadata of one request, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correlation {
    /// `x-request-id`, if sent.
    pub request_id: Option<String>,
    /// `traceparent`, if sent.
    pub traceparent: Option<String>,
}

/// Reads and checks both headers.
pub fn read(headers: &HeaderMap) -> Result<Correlation, InvalidHeader> {
    Ok(Correlation {
        request_id: checked(headers, REQUEST_ID)?.map(str::to_owned),
        traceparent: checked(headers, TRACEPARENT)?.map(str::to_owned),
    })
}

/// The value of `name` for a log line: empty when absent, a marker when invalid.
pub fn loggable<'a>(headers: &'a HeaderMap, name: &'static str) -> &'a str {
    match checked(headers, name) {
        Ok(value) => value.unwrap_or_default(),
        Err(_) => INVALID,
    }
}

/// The value of correlation header `name`, if present and well formed.
fn checked<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, InvalidHeader> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let (valid, description): (fn(&str) -> bool, _) = match name {
        TRACEPARENT => (
            valid_traceparent,
            "must be a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>, lower case",
        ),
        _ => (
            valid_request_id,
            "must be 1-128 printable ASCII characters without spaces",
        ),
    };
    match value.to_str() {
        Ok("") => Ok(None),
        Ok(text) if valid(text) => Ok(Some(text)),
        _ => Err(InvalidHeader {
            header: name,
            description,
        }),
    }
}

/// 1-128 visible ASCII characters.
pub fn valid_request_id(value: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Version 00 of W3C Trace Context: `00-<trace id>-<parent id>-<flags>` in
/// lower-case hex, neither id all zeros.
pub fn valid_traceparent(value: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let mut parts = value.split('-');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("00"), Some(trace), Some(parent), Some(flags), None) => {
            hex(trace, 32) && nonzero(trace) && hex(parent, 16) && nonzero(parent) && hex(flags, 2)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http::HeaderValue;

    use super::*;

    const GOOD_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn well_formed_headers_are_read() {
        let read = read(&headers(&[
            (REQUEST_ID, "req-42"),
            (TRACEPARENT, GOOD_TRACEPARENT),
        ]))
        .unwrap();
        assert_eq!(read.request_id.as_deref(), Some("req-42"));
        assert_eq!(read.traceparent.as_deref(), Some(GOOD_TRACEPARENT));
        assert_eq!(
            super::read(&HeaderMap::new()).unwrap(),
            Correlation::default()
        );
        assert_eq!(
            super::read(&headers(&[(REQUEST_ID, "")])).unwrap(),
            Correlation::default()
        );
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
            assert_eq!(
                read(&headers(&[(TRACEPARENT, bad)])).unwrap_err().header,
                TRACEPARENT
            );
        }
    }

    #[test]
    fn request_ids_are_short_and_printable() {
        assert!(valid_request_id(&"r".repeat(128)));
        assert!(!valid_request_id(&"r".repeat(129)));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id("tab\there"));
        let mut map = HeaderMap::new();
        map.insert(REQUEST_ID, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(read(&map).unwrap_err().header, REQUEST_ID);
        assert_eq!(loggable(&map, REQUEST_ID), "(invalid)");
    }

    #[test]
    fn an_invalid_header_is_invalid_argument_naming_it() {
        let status = Status::from(InvalidHeader {
            header: TRACEPARENT,
            description: "must be a W3C traceparent",
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("BadRequest details");
        assert_eq!(bad.field_violations[0].field, "traceparent");
    }

    #[test]
    fn spans_log_valid_values_only() {
        let map = headers(&[(REQUEST_ID, "req-1"), (TRACEPARENT, "x")]);
        assert_eq!(loggable(&map, REQUEST_ID), "req-1");
        assert_eq!(loggable(&map, TRACEPARENT), "(invalid)");
        assert_eq!(loggable(&HeaderMap::new(), TRACEPARENT), "");
    }
}
