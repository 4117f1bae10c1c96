//! Rows in PostgreSQL's binary `COPY … FROM STDIN (FORMAT binary)` format:
//! each field's length, then its value in the binary send format (no text to
//! parse on the server). A row's field count comes from the table module that
//! writes it (`orders::COPY_COLUMNS`, `history::COPY_COLUMNS`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The version byte that starts a jsonb value in binary format.
const JSONB_VERSION: u8 = 1;

/// A `COPY` payload being built, row by row.
#[derive(Debug)]
pub(super) struct CopyRows {
    bytes: Vec<u8>,
}

impl CopyRows {
    pub(super) fn new() -> Self {
        let mut bytes = b"PGCOPY\n\xff\r\n\0".to_vec();
        bytes.extend_from_slice(&0i32.to_be_bytes()); // flags
        bytes.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self { bytes }
    }

    /// Starts a row of `columns` fields.
    pub(super) fn row(&mut self, columns: &[&str]) {
        let fields = i16::try_from(columns.len()).expect("a row has few columns");
        self.bytes.extend_from_slice(&fields.to_be_bytes());
    }

    fn field(&mut self, value: Option<&[u8]>) {
        match value {
            Some(value) => {
                let len = i32::try_from(value.len()).expect("a field is under 2 GiB");
                self.bytes.extend_from_slice(&len.to_be_bytes());
                self.bytes.extend_from_slice(value);
            }
            None => self.bytes.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    pub(super) fn text(&mut self, value: Option<&str>) {
        self.field(value.map(str::as_bytes));
    }

    pub(super) fn int4(&mut self, value: Option<i32>) {
        self.field(value.map(i32::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    pub(super) fn int8(&mut self, value: Option<i64>) {
        self.field(value.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    pub(super) fn uuid(&mut self, value: Uuid) {
        self.field(Some(value.as_bytes()));
    }

    /// Microseconds since 2000-01-01, truncated like a bound parameter.
    pub(super) fn time(&mut self, value: DateTime<Utc>) {
        self.int8(Some(value.timestamp_micros() - PG_EPOCH_MICROS));
    }

    pub(super) fn bytes(&mut self, value: &[u8]) {
        self.field(Some(value));
    }

    /// A jsonb value from its JSON text.
    pub(super) fn jsonb(&mut self, json: &str) {
        let mut value = Vec::with_capacity(json.len() + 1);
        value.push(JSONB_VERSION);
        value.extend_from_slice(json.as_bytes());
        self.field(Some(&value));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.len() <= 19
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&(-1i16).to_be_bytes());
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_are_length_prefixed_with_a_header_and_trailer() {
        let mut rows = CopyRows::new();
        assert!(rows.is_empty());
        rows.row(&["a", "b", "c", "d"]);
        rows.text(Some("ab"));
        rows.int4(None);
        rows.time(DateTime::from_timestamp(946_684_801, 0).unwrap());
        rows.jsonb("[]");
        assert!(!rows.is_empty());
        let bytes = rows.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 4, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(&1_000_000i64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 3, 1, b'[', b']']);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }
}
