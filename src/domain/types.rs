//! Validated domain values. Each newtype is built only through `parse`, which
//! enforces its rule once at the edge, so nothing past the edge re-validates.

use std::fmt;

use uuid::Uuid;

/// The most lines an order may hold.
pub const MAX_LINES: usize = 100;

/// Why a raw value was rejected, phrased as the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

impl ValidationError {
    fn new(reason: &str) -> Self {
        Self(reason.to_owned())
    }
}

/// Checks a text's length in chars and that its only control chars are `allowed_controls`.
fn is_valid_text(s: &str, min: usize, max: usize, allowed_controls: &[char]) -> bool {
    let len = s.chars().count();
    (min..=max).contains(&len)
        && s.chars()
            .all(|c| !c.is_control() || allowed_controls.contains(&c))
}

/// Checks the rule shared by identifiers: 1-64 chars, no control chars, not blank.
fn parse_identifier(s: &str) -> Result<String, ValidationError> {
    if is_valid_text(s, 1, 64, &[]) && !s.trim().is_empty() {
        Ok(s.to_owned())
    } else {
        Err(ValidationError::new(
            "must be 1-64 characters, not blank, with no control characters",
        ))
    }
}

/// Implements `as_str` and `Display` for a validated text newtype.
macro_rules! text_accessors {
    ($name:ident) => {
        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Identifies one order; never the nil UUID when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(Uuid);

impl OrderId {
    /// Parses any UUID form `Uuid::parse_str` accepts, rejecting the nil UUID.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let uuid = Uuid::parse_str(s).map_err(|_| ValidationError::new("must be a UUID"))?;
        if uuid.is_nil() {
            return Err(ValidationError::new("must not be the nil UUID"));
        }
        Ok(Self(uuid))
    }

    /// A fresh time-ordered (v7) id, so new orders sort by creation time.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps a UUID from a trusted source, such as the event store, unchecked.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// Identifies a customer: 1-64 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomerId(String);

impl CustomerId {
    /// Accepts 1-64 characters, not all whitespace, with no control characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        parse_identifier(s).map(Self)
    }
}

text_accessors!(CustomerId);

/// Identifies a product: 1-64 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductId(String);

impl ProductId {
    /// Accepts 1-64 characters, not all whitespace, with no control characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        parse_identifier(s).map(Self)
    }
}

text_accessors!(ProductId);

/// An ISO 4217-style currency code: exactly three upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CurrencyCode(String);

impl CurrencyCode {
    /// Accepts exactly three upper-case ASCII letters, such as `EUR`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "must be exactly 3 upper-case ASCII letters",
            ))
        }
    }
}

text_accessors!(CurrencyCode);

/// How many units of a product a line holds: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(u32);

impl Quantity {
    /// The largest quantity a line may hold.
    pub const MAX: Quantity = Quantity(10_000);

    /// Accepts 1 to 10,000.
    pub fn parse(n: u32) -> Result<Self, ValidationError> {
        if (1..=Self::MAX.0).contains(&n) {
            Ok(Self(n))
        } else {
            Err(ValidationError::new("must be 1-10000"))
        }
    }

    /// The number of units.
    pub fn get(&self) -> u32 {
        self.0
    }

    /// The sum of two quantities, or `None` when it would exceed `Quantity::MAX`.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        Self::parse(self.0.saturating_add(other.0)).ok()
    }
}

/// A unit price in the currency's minor units (cents): 0 to 10^12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitPrice(i64);

impl UnitPrice {
    /// Accepts 0 to 1,000,000,000,000 minor units; free items are allowed.
    pub fn parse(minor: i64) -> Result<Self, ValidationError> {
        if (0..=1_000_000_000_000).contains(&minor) {
            Ok(Self(minor))
        } else {
            Err(ValidationError::new("must be 0-1000000000000 minor units"))
        }
    }

    /// The price in minor units.
    pub fn get(&self) -> i64 {
        self.0
    }
}

/// A carrier's tracking number: 1-64 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrackingNumber(String);

impl TrackingNumber {
    /// Accepts 1-64 characters with no control characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if is_valid_text(s, 1, 64, &[]) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "must be 1-64 characters with no control characters",
            ))
        }
    }
}

text_accessors!(TrackingNumber);

/// Why an order was cancelled: up to 500 characters, may be empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CancelReason(String);

impl CancelReason {
    /// Accepts 0-500 characters; newlines and tabs are the only control characters allowed.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if is_valid_text(s, 0, 500, &['\n', '\t']) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "must be at most 500 characters with no control characters other than newline and tab",
            ))
        }
    }
}

text_accessors!(CancelReason);

/// A client-chosen key that makes a command idempotent: 1-128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Accepts 1-128 characters with no control characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if is_valid_text(s, 1, 128, &[]) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "must be 1-128 characters with no control characters",
            ))
        }
    }
}

text_accessors!(RequestId);

/// One product on an order, at one unit price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// The product ordered.
    pub product_id: ProductId,
    /// How many units.
    pub quantity: Quantity,
    /// The price of one unit, in minor units.
    pub unit_price: UnitPrice,
}

impl OrderLine {
    /// Quantity times unit price, in minor units; at most 10^16, so it cannot overflow.
    pub fn total_minor(&self) -> i64 {
        i64::from(self.quantity.get()) * self.unit_price.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIL: &str = "00000000-0000-0000-0000-000000000000";

    #[test]
    fn order_id_accepts_a_uuid_and_displays_it_hyphenated_lowercase() {
        let id = OrderId::parse("0192F6E4-7B1C-7A00-8000-000000000001").unwrap();
        assert_eq!(id.to_string(), "0192f6e4-7b1c-7a00-8000-000000000001");
        assert_eq!(OrderId::from_uuid(id.as_uuid()), id);
    }

    #[test]
    fn order_id_accepts_the_simple_uuid_form() {
        assert!(OrderId::parse("0192f6e47b1c7a008000000000000001").is_ok());
    }

    #[test]
    fn order_id_rejects_the_nil_uuid() {
        assert!(OrderId::parse(NIL).is_err());
    }

    #[test]
    fn order_id_rejects_a_non_uuid() {
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse("order-1").is_err());
    }

    #[test]
    fn generated_order_ids_are_v7_and_distinct() {
        let (a, b) = (OrderId::generate(), OrderId::generate());
        assert_ne!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }

    fn check_identifier(parse: fn(&str) -> Result<String, ValidationError>) {
        assert!(parse("c").is_ok());
        assert!(parse(&"x".repeat(64)).is_ok());
        assert!(
            parse(&"é".repeat(64)).is_ok(),
            "length counts chars, not bytes"
        );
        assert!(parse("ann lee").is_ok());
        assert!(parse("").is_err());
        assert!(parse(&"x".repeat(65)).is_err());
        assert!(parse("   ").is_err());
        assert!(parse("a\nb").is_err());
        assert!(parse("a\0b").is_err());
        assert!(parse("a\u{7f}").is_err());
    }

    #[test]
    fn customer_id_is_1_to_64_printable_characters_not_blank() {
        check_identifier(|s| CustomerId::parse(s).map(|v| v.as_str().to_owned()));
    }

    #[test]
    fn product_id_is_1_to_64_printable_characters_not_blank() {
        check_identifier(|s| ProductId::parse(s).map(|v| v.to_string()));
    }

    #[test]
    fn currency_code_is_three_upper_case_ascii_letters() {
        assert_eq!(CurrencyCode::parse("USD").unwrap().as_str(), "USD");
        for bad in ["usd", "US", "USDX", "", "U5D", "ÜSD"] {
            assert!(CurrencyCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quantity_is_1_to_10000() {
        assert!(Quantity::parse(0).is_err());
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(10_000).unwrap(), Quantity::MAX);
        assert!(Quantity::parse(10_001).is_err());
    }

    #[test]
    fn quantities_add_up_to_the_maximum_and_no_further() {
        let q = |n| Quantity::parse(n).unwrap();
        assert_eq!(q(9_999).checked_add(q(1)), Some(Quantity::MAX));
        assert_eq!(q(9_999).checked_add(q(2)), None);
    }

    #[test]
    fn unit_price_is_0_to_10_pow_12() {
        assert!(UnitPrice::parse(-1).is_err());
        assert_eq!(UnitPrice::parse(0).unwrap().get(), 0);
        assert!(UnitPrice::parse(1_000_000_000_000).is_ok());
        assert!(UnitPrice::parse(1_000_000_000_001).is_err());
        assert!(UnitPrice::parse(i64::MIN).is_err());
    }

    #[test]
    fn tracking_number_is_1_to_64_characters_without_control_characters() {
        assert!(TrackingNumber::parse("1Z999AA10123456784").is_ok());
        assert!(TrackingNumber::parse(&"9".repeat(64)).is_ok());
        assert!(TrackingNumber::parse(&"9".repeat(65)).is_err());
        assert!(TrackingNumber::parse("").is_err());
        assert!(TrackingNumber::parse("1Z\t99").is_err());
    }

    #[test]
    fn cancel_reason_is_up_to_500_characters_allowing_newline_and_tab() {
        assert!(CancelReason::parse("").is_ok());
        assert!(CancelReason::parse("changed my mind\n\tsorry").is_ok());
        assert!(CancelReason::parse(&"r".repeat(500)).is_ok());
        assert!(CancelReason::parse(&"r".repeat(501)).is_err());
        assert!(CancelReason::parse("a\rb").is_err());
        assert!(CancelReason::parse("a\0b").is_err());
    }

    #[test]
    fn request_id_is_1_to_128_characters_without_control_characters() {
        assert!(RequestId::parse(&"k".repeat(128)).is_ok());
        assert!(RequestId::parse(&"k".repeat(129)).is_err());
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse("k\n").is_err());
    }

    #[test]
    fn validation_errors_read_as_the_rule() {
        assert_eq!(
            Quantity::parse(0).unwrap_err().to_string(),
            "must be 1-10000"
        );
    }

    #[test]
    fn a_line_total_is_quantity_times_unit_price() {
        let line = OrderLine {
            product_id: ProductId::parse("p").unwrap(),
            quantity: Quantity::MAX,
            unit_price: UnitPrice::parse(1_000_000_000_000).unwrap(),
        };
        assert_eq!(line.total_minor(), 10_000_000_000_000_000);
    }
}
