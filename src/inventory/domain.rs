//! The Inventory's rules, pure: validated values, and what each RPC may do
//! given what is stored. The store fetches every fact first and applies the
//! verdict; nothing here does I/O.

use std::fmt;

use crate::domain::{ProductId, Quantity, RequestId, TrackingNumber, ValidationError};

/// The most lines one reservation may hold.
pub const MAX_RESERVATION_LINES: usize = 100;
/// The largest on-hand count `SetStock` takes.
pub const MAX_ON_HAND: i64 = 1_000_000_000;

/// A reservation's idempotency key: 1-128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservationId(String);

impl ReservationId {
    /// Accepts what a `request_id` accepts: 1-128 characters, no control characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        RequestId::parse(s).map(|_| Self(s.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product's on-hand count as `SetStock` takes it: 0 to [`MAX_ON_HAND`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHand(i64);

impl OnHand {
    /// Accepts 0 to [`MAX_ON_HAND`].
    pub fn parse(n: i64) -> Result<Self, ValidationError> {
        if (0..=MAX_ON_HAND).contains(&n) {
            Ok(Self(n))
        } else {
            Err(ValidationError(format!("must be 0-{MAX_ON_HAND}")))
        }
    }

    /// The count.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Units of one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The product.
    pub product_id: ProductId,
    /// How many units (at least 1).
    pub quantity: i64,
}

/// What a reservation holds: one line per product, sorted by product id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lines(Vec<Line>);

impl Lines {
    /// The lines of a request: lines of one product are added together.
    pub fn merged(lines: impl IntoIterator<Item = (ProductId, Quantity)>) -> Self {
        let mut merged: Vec<Line> = Vec::new();
        for (product_id, quantity) in lines {
            let quantity = i64::from(quantity.get());
            match merged.iter_mut().find(|l| l.product_id == product_id) {
                Some(line) => line.quantity += quantity,
                None => merged.push(Line {
                    product_id,
                    quantity,
                }),
            }
        }
        Self::sorted(merged)
    }

    /// Lines as stored (one per product), put in order.
    pub fn sorted(mut lines: Vec<Line>) -> Self {
        lines.sort_by(|a, b| a.product_id.as_str().cmp(b.product_id.as_str()));
        Self(lines)
    }

    /// The lines, sorted by product id.
    pub fn iter(&self) -> impl Iterator<Item = &Line> {
        self.0.iter()
    }

    /// Product ids and quantities as two columns (for array parameters).
    pub fn columns(&self) -> (Vec<String>, Vec<i64>) {
        self.0
            .iter()
            .map(|l| (l.product_id.as_str().to_owned(), l.quantity))
            .unzip()
    }
}

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// Its units are held.
    Reserved,
    /// Its units were given back (or it was released before it was made).
    Released,
    /// Its units were shipped.
    Dispatched,
    /// A product was short when it was asked for; nothing was held.
    Refused,
}

impl ReservationState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Released => "released",
            Self::Dispatched => "dispatched",
            Self::Refused => "refused",
        }
    }

    /// Reads the stored spelling.
    pub fn from_stored(s: &str) -> Option<Self> {
        [
            Self::Reserved,
            Self::Released,
            Self::Dispatched,
            Self::Refused,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

impl fmt::Display for ReservationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Its key.
    pub id: ReservationId,
    /// Where it is.
    pub state: ReservationState,
    /// Released before it was made: it never held anything and never will.
    pub tombstone: bool,
    /// What it asked for (empty for a tombstone).
    pub lines: Lines,
    /// The product that was short, when refused.
    pub refused_product: Option<ProductId>,
    /// The shipment's tracking number, once dispatched.
    pub tracking_number: Option<TrackingNumber>,
}

/// A product's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    /// The product.
    pub product_id: ProductId,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held by reservations.
    pub reserved: i64,
}

impl StockLevel {
    /// A product never stocked.
    pub fn none(product_id: ProductId) -> Self {
        Self {
            product_id,
            on_hand: 0,
            reserved: 0,
        }
    }

    /// Units free to reserve.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// A business rule an Inventory request broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// A product has too few units available; nothing was reserved.
    #[error("not enough stock of product {product}")]
    Insufficient {
        /// The first short product, in product id order.
        product: ProductId,
    },
    /// The key was first used for a different request.
    #[error("reservation_id was already used for a different request")]
    KeyReused,
    /// The key was released before it was reserved.
    #[error("the reservation was released before it was made; use a new reservation_id")]
    ReleasedBeforeReserved,
    /// Releasing a dispatched reservation.
    #[error("the reservation is dispatched; it can no longer be released")]
    AlreadyDispatched,
    /// Dispatching a reservation that holds nothing.
    #[error("the reservation is {0}; only a reserved one can be dispatched")]
    NotReserved(ReservationState),
    /// No reservation has this key.
    #[error("no reservation has this reservation_id")]
    NotFound,
    /// `SetStock` below what reservations hold.
    #[error("on_hand {on_hand} is below the {reserved} units reserved")]
    BelowReserved {
        /// What was asked for.
        on_hand: i64,
        /// What reservations hold.
        reserved: i64,
    },
}

/// `SetStock` on a product whose reservations hold `reserved` units.
pub fn set_stock(reserved: i64, on_hand: OnHand) -> Result<(), InventoryError> {
    if on_hand.get() < reserved {
        return Err(InventoryError::BelowReserved {
            on_hand: on_hand.get(),
            reserved,
        });
    }
    Ok(())
}

/// `ReserveStock` with a key already stored: the first answer again, or why not.
pub fn replay_reserve(existing: &Reservation, lines: &Lines) -> Result<(), InventoryError> {
    if existing.tombstone {
        return Err(InventoryError::ReleasedBeforeReserved);
    }
    if existing.lines != *lines {
        return Err(InventoryError::KeyReused);
    }
    match &existing.refused_product {
        Some(product) => Err(InventoryError::Insufficient {
            product: product.clone(),
        }),
        None => Ok(()),
    }
}

/// `ReserveStock` with a new key, against the stock of its products (absent
/// ones have none): every line fits, or the first short product.
pub fn allocate(lines: &Lines, stock: &[StockLevel]) -> Result<(), InventoryError> {
    for line in lines.iter() {
        let available = stock
            .iter()
            .find(|s| s.product_id == line.product_id)
            .map_or(0, StockLevel::available);
        if available < line.quantity {
            return Err(InventoryError::Insufficient {
                product: line.product_id.clone(),
            });
        }
    }
    Ok(())
}

/// `ReleaseReservation` of a stored reservation: whether its units go back.
pub fn release(existing: &Reservation) -> Result<bool, InventoryError> {
    match existing.state {
        ReservationState::Reserved => Ok(true),
        ReservationState::Released | ReservationState::Refused => Ok(false),
        ReservationState::Dispatched => Err(InventoryError::AlreadyDispatched),
    }
}

/// What `DispatchReservation` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Ship the units under a new tracking number.
    Ship,
    /// Already shipped: answer its tracking number again.
    Replay(TrackingNumber),
}

/// `DispatchReservation` of a stored reservation.
pub fn dispatch(existing: &Reservation) -> Result<Dispatch, InventoryError> {
    match (existing.state, &existing.tracking_number) {
        (ReservationState::Reserved, _) => Ok(Dispatch::Ship),
        (ReservationState::Dispatched, Some(tracking)) => Ok(Dispatch::Replay(tracking.clone())),
        (state, _) => Err(InventoryError::NotReserved(state)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: &str) -> ProductId {
        ProductId::parse(id).unwrap()
    }

    fn lines(pairs: &[(&str, u32)]) -> Lines {
        Lines::merged(
            pairs
                .iter()
                .map(|(p, q)| (product(p), Quantity::parse(*q).unwrap())),
        )
    }

    fn stock(id: &str, on_hand: i64, reserved: i64) -> StockLevel {
        StockLevel {
            product_id: product(id),
            on_hand,
            reserved,
        }
    }

    /// Given a stored reservation in `state` holding `held`.
    fn given(state: ReservationState, held: &[(&str, u32)]) -> Reservation {
        Reservation {
            id: ReservationId::parse("r-1").unwrap(),
            state,
            tombstone: false,
            lines: lines(held),
            refused_product: (state == ReservationState::Refused).then(|| product("p-short")),
            tracking_number: (state == ReservationState::Dispatched)
                .then(|| TrackingNumber::parse("TRK-1").unwrap()),
        }
    }

    fn tombstone() -> Reservation {
        Reservation {
            tombstone: true,
            ..given(ReservationState::Released, &[])
        }
    }

    #[test]
    fn lines_of_one_product_are_added_together_and_sorted() {
        let merged = lines(&[("b", 2), ("a", 1), ("b", 3)]);
        assert_eq!(
            merged.columns(),
            (vec!["a".to_owned(), "b".to_owned()], vec![1, 5])
        );
    }

    #[test]
    fn allocates_when_every_line_fits() {
        let wanted = lines(&[("a", 2), ("b", 3)]);
        assert_eq!(
            allocate(&wanted, &[stock("a", 2, 0), stock("b", 10, 7)]),
            Ok(())
        );
    }

    #[test]
    fn refuses_naming_the_first_short_product() {
        let wanted = lines(&[("a", 2), ("c", 1), ("b", 4)]);
        assert_eq!(
            allocate(&wanted, &[stock("a", 5, 0), stock("b", 10, 7)]),
            Err(InventoryError::Insufficient {
                product: product("b")
            })
        );
    }

    #[test]
    fn a_product_never_stocked_has_none_to_reserve() {
        assert_eq!(
            allocate(&lines(&[("ghost", 1)]), &[]),
            Err(InventoryError::Insufficient {
                product: product("ghost")
            })
        );
    }

    #[test]
    fn reserved_units_are_not_available() {
        assert_eq!(
            allocate(&lines(&[("a", 1)]), &[stock("a", 3, 3)]),
            Err(InventoryError::Insufficient {
                product: product("a")
            })
        );
    }

    #[test]
    fn a_retry_with_the_same_lines_answers_as_the_first_time() {
        let stored = given(ReservationState::Reserved, &[("a", 1)]);
        assert_eq!(replay_reserve(&stored, &lines(&[("a", 1)])), Ok(()));
        // Also once released or dispatched: the answer to ReserveStock was OK.
        let released = given(ReservationState::Released, &[("a", 1)]);
        assert_eq!(replay_reserve(&released, &lines(&[("a", 1)])), Ok(()));
    }

    #[test]
    fn a_retry_of_a_refused_reservation_is_refused_again() {
        let stored = given(ReservationState::Refused, &[("a", 1)]);
        assert_eq!(
            replay_reserve(&stored, &lines(&[("a", 1)])),
            Err(InventoryError::Insufficient {
                product: product("p-short")
            })
        );
    }

    #[test]
    fn rejects_reusing_a_key_for_other_lines() {
        let stored = given(ReservationState::Reserved, &[("a", 1)]);
        assert_eq!(
            replay_reserve(&stored, &lines(&[("a", 2)])),
            Err(InventoryError::KeyReused)
        );
    }

    #[test]
    fn rejects_reserving_a_key_released_before_it_was_reserved() {
        assert_eq!(
            replay_reserve(&tombstone(), &lines(&[("a", 1)])),
            Err(InventoryError::ReleasedBeforeReserved)
        );
    }

    #[test]
    fn releasing_gives_back_only_what_is_held() {
        assert_eq!(
            release(&given(ReservationState::Reserved, &[("a", 1)])),
            Ok(true)
        );
        assert_eq!(
            release(&given(ReservationState::Released, &[("a", 1)])),
            Ok(false)
        );
        assert_eq!(
            release(&given(ReservationState::Refused, &[("a", 1)])),
            Ok(false)
        );
        assert_eq!(release(&tombstone()), Ok(false));
    }

    #[test]
    fn rejects_releasing_a_dispatched_reservation() {
        assert_eq!(
            release(&given(ReservationState::Dispatched, &[("a", 1)])),
            Err(InventoryError::AlreadyDispatched)
        );
    }

    #[test]
    fn dispatching_twice_answers_the_first_tracking_number() {
        assert_eq!(
            dispatch(&given(ReservationState::Reserved, &[("a", 1)])),
            Ok(Dispatch::Ship)
        );
        assert_eq!(
            dispatch(&given(ReservationState::Dispatched, &[("a", 1)])),
            Ok(Dispatch::Replay(TrackingNumber::parse("TRK-1").unwrap()))
        );
    }

    #[test]
    fn rejects_dispatching_a_released_or_refused_reservation() {
        for state in [ReservationState::Released, ReservationState::Refused] {
            assert_eq!(
                dispatch(&given(state, &[("a", 1)])),
                Err(InventoryError::NotReserved(state))
            );
        }
    }

    #[test]
    fn rejects_setting_stock_below_what_is_reserved() {
        assert_eq!(set_stock(3, OnHand::parse(3).unwrap()), Ok(()));
        assert_eq!(
            set_stock(3, OnHand::parse(2).unwrap()),
            Err(InventoryError::BelowReserved {
                on_hand: 2,
                reserved: 3
            })
        );
    }

    #[test]
    fn on_hand_and_keys_are_validated() {
        assert!(OnHand::parse(-1).is_err());
        assert!(OnHand::parse(MAX_ON_HAND + 1).is_err());
        assert!(ReservationId::parse("").is_err());
        assert!(ReservationId::parse(&"k".repeat(129)).is_err());
        assert!(ReservationId::parse("order-1/reserve").is_ok());
    }

    #[test]
    fn states_read_back_what_they_store() {
        for state in [
            ReservationState::Reserved,
            ReservationState::Released,
            ReservationState::Dispatched,
            ReservationState::Refused,
        ] {
            assert_eq!(ReservationState::from_stored(state.as_str()), Some(state));
        }
        assert_eq!(ReservationState::from_stored("lost"), None);
    }
}
