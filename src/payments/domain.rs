//! The payment provider stand-in's rules, pure: validated values, and what
//! each RPC may do given what is stored.

use std::fmt;

use crate::domain::{CurrencyCode, CustomerId, RequestId, ValidationError};

/// The largest amount an authorization may ask for, in minor units.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// A payment's idempotency key: 1-128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentId(String);

impl PaymentId {
    /// Accepts what a `request_id` accepts: 1-128 characters, no control characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        RequestId::parse(s).map(|_| Self(s.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount to authorize: 1 to [`MAX_AMOUNT_MINOR`] minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(i64);

impl Amount {
    /// Accepts 1 to [`MAX_AMOUNT_MINOR`].
    pub fn parse(minor: i64) -> Result<Self, ValidationError> {
        if (1..=MAX_AMOUNT_MINOR).contains(&minor) {
            Ok(Self(minor))
        } else {
            Err(ValidationError(format!(
                "must be 1-{MAX_AMOUNT_MINOR} minor units"
            )))
        }
    }

    /// The amount in minor units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// What an authorization asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Whose means of payment.
    pub customer_id: CustomerId,
    /// How much.
    pub amount: Amount,
    /// In which currency.
    pub currency: CurrencyCode,
}

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// The amount is held.
    Authorized,
    /// The amount was taken.
    Captured,
    /// The authorization was let go (or the key voided before any).
    Voided,
    /// The provider refused it.
    Declined,
}

impl PaymentState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::Voided => "voided",
            Self::Declined => "declined",
        }
    }

    /// Reads the stored spelling.
    pub fn from_stored(s: &str) -> Option<Self> {
        [
            Self::Authorized,
            Self::Captured,
            Self::Voided,
            Self::Declined,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

impl fmt::Display for PaymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Its key.
    pub id: PaymentId,
    /// Where it is.
    pub state: PaymentState,
    /// What was asked for; `None` when voided before it was authorized (a tombstone).
    pub authorization: Option<Authorization>,
}

impl Payment {
    /// The amount taken: all of it once captured, else nothing.
    pub fn captured_minor(&self) -> i64 {
        match (&self.authorization, self.state) {
            (Some(authorization), PaymentState::Captured) => authorization.amount.get(),
            _ => 0,
        }
    }
}

/// A business rule a Payments request broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The provider refused the authorization.
    #[error("payment declined")]
    Declined,
    /// The key was first used for a different request.
    #[error("payment_id was already used for a different request")]
    KeyReused,
    /// The key was voided before it was authorized.
    #[error("the payment was voided before it was authorized; use a new payment_id")]
    VoidedBeforeAuthorized,
    /// Capturing a voided payment.
    #[error("the payment is voided; it can no longer be captured")]
    Voided,
    /// Voiding a captured payment.
    #[error("the payment is captured; it can no longer be voided")]
    Captured,
    /// No payment has this key.
    #[error("no payment has this payment_id")]
    NotFound,
}

/// The verdict on a new authorization: declined above `decline_above_minor`.
pub fn authorize(request: &Authorization, decline_above_minor: i64) -> PaymentState {
    if request.amount.get() > decline_above_minor {
        PaymentState::Declined
    } else {
        PaymentState::Authorized
    }
}

/// The answer to an authorization with verdict `state`.
pub fn answer_authorize(state: PaymentState) -> Result<(), PaymentError> {
    match state {
        PaymentState::Declined => Err(PaymentError::Declined),
        _ => Ok(()),
    }
}

/// `AuthorizePayment` with a key already stored: the first answer again, or why not.
pub fn replay_authorize(existing: &Payment, request: &Authorization) -> Result<(), PaymentError> {
    match &existing.authorization {
        None => Err(PaymentError::VoidedBeforeAuthorized),
        Some(first) if first != request => Err(PaymentError::KeyReused),
        Some(_) if existing.state == PaymentState::Declined => Err(PaymentError::Declined),
        Some(_) => Ok(()),
    }
}

/// `CapturePayment` of a stored payment: whether it changes.
pub fn capture(existing: &Payment) -> Result<bool, PaymentError> {
    match existing.state {
        PaymentState::Authorized => Ok(true),
        PaymentState::Captured => Ok(false),
        PaymentState::Voided => Err(PaymentError::Voided),
        PaymentState::Declined => Err(PaymentError::Declined),
    }
}

/// `VoidPayment` of a stored payment: whether it changes (a declined one
/// holds nothing and stays declined).
pub fn void(existing: &Payment) -> Result<bool, PaymentError> {
    match existing.state {
        PaymentState::Authorized => Ok(true),
        PaymentState::Voided | PaymentState::Declined => Ok(false),
        PaymentState::Captured => Err(PaymentError::Captured),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorization(amount: i64) -> Authorization {
        Authorization {
            customer_id: CustomerId::parse("c-1").unwrap(),
            amount: Amount::parse(amount).unwrap(),
            currency: CurrencyCode::parse("EUR").unwrap(),
        }
    }

    /// Given a stored payment of 100 in `state`.
    fn given(state: PaymentState) -> Payment {
        Payment {
            id: PaymentId::parse("p-1").unwrap(),
            state,
            authorization: Some(authorization(100)),
        }
    }

    fn tombstone() -> Payment {
        Payment {
            authorization: None,
            ..given(PaymentState::Voided)
        }
    }

    #[test]
    fn authorizes_up_to_the_limit_and_declines_above_it() {
        assert_eq!(
            authorize(&authorization(1_000), 1_000),
            PaymentState::Authorized
        );
        assert_eq!(
            authorize(&authorization(1_001), 1_000),
            PaymentState::Declined
        );
        assert_eq!(
            answer_authorize(PaymentState::Declined),
            Err(PaymentError::Declined)
        );
    }

    #[test]
    fn a_retry_answers_as_the_first_time() {
        assert_eq!(
            replay_authorize(&given(PaymentState::Authorized), &authorization(100)),
            Ok(())
        );
        assert_eq!(
            replay_authorize(&given(PaymentState::Captured), &authorization(100)),
            Ok(())
        );
        assert_eq!(
            replay_authorize(&given(PaymentState::Declined), &authorization(100)),
            Err(PaymentError::Declined)
        );
    }

    #[test]
    fn rejects_reusing_a_key_for_another_amount() {
        assert_eq!(
            replay_authorize(&given(PaymentState::Authorized), &authorization(101)),
            Err(PaymentError::KeyReused)
        );
    }

    #[test]
    fn rejects_authorizing_a_key_voided_before_it_was_authorized() {
        assert_eq!(
            replay_authorize(&tombstone(), &authorization(100)),
            Err(PaymentError::VoidedBeforeAuthorized)
        );
    }

    #[test]
    fn captures_an_authorized_payment_once() {
        assert_eq!(capture(&given(PaymentState::Authorized)), Ok(true));
        assert_eq!(capture(&given(PaymentState::Captured)), Ok(false));
    }

    #[test]
    fn rejects_capturing_a_voided_or_declined_payment() {
        assert_eq!(
            capture(&given(PaymentState::Voided)),
            Err(PaymentError::Voided)
        );
        assert_eq!(capture(&tombstone()), Err(PaymentError::Voided));
        assert_eq!(
            capture(&given(PaymentState::Declined)),
            Err(PaymentError::Declined)
        );
    }

    #[test]
    fn voids_an_authorized_payment_once_and_leaves_a_declined_one() {
        assert_eq!(void(&given(PaymentState::Authorized)), Ok(true));
        assert_eq!(void(&given(PaymentState::Voided)), Ok(false));
        assert_eq!(void(&given(PaymentState::Declined)), Ok(false));
    }

    #[test]
    fn rejects_voiding_a_captured_payment() {
        assert_eq!(
            void(&given(PaymentState::Captured)),
            Err(PaymentError::Captured)
        );
    }

    #[test]
    fn only_a_captured_payment_counts_as_taken() {
        assert_eq!(given(PaymentState::Captured).captured_minor(), 100);
        assert_eq!(given(PaymentState::Authorized).captured_minor(), 0);
        assert_eq!(tombstone().captured_minor(), 0);
    }

    #[test]
    fn amounts_and_keys_are_validated() {
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(MAX_AMOUNT_MINOR + 1).is_err());
        assert!(PaymentId::parse("").is_err());
        assert!(PaymentId::parse("order-1/pay").is_ok());
        for state in [
            PaymentState::Authorized,
            PaymentState::Captured,
            PaymentState::Voided,
            PaymentState::Declined,
        ] {
            assert_eq!(PaymentState::from_stored(state.as_str()), Some(state));
        }
    }
}
