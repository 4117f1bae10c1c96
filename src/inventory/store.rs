//! The Inventory's SQL: stock rows, reservations and their lines
//! (`migrations/inventory`). Each RPC is one transaction that fetches what
//! the rules in `domain` need, asks them, and applies the verdict.
//!
//! Lock order, the same in every transaction: first the reservation's key
//! (claimed by an insert, or its row locked), then stock rows in product id
//! order.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{
    Error,
    domain::{
        self, Dispatch, InventoryError, Line, Lines, OnHand, Reservation, ReservationId,
        ReservationState, StockLevel,
    },
};
use crate::domain::{ProductId, TrackingNumber};

/// The inventory database.
#[derive(Debug, Clone)]
pub struct InventoryStore {
    pool: PgPool,
}

impl InventoryStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Sets `product`'s on-hand count; refused below what is reserved.
    pub async fn set_stock(
        &self,
        product: &ProductId,
        on_hand: OnHand,
    ) -> Result<StockLevel, Error> {
        let mut tx = self.pool.begin().await?;
        let reserved = sqlx::query_scalar!(
            "SELECT reserved FROM stock_item WHERE product_id = $1 FOR UPDATE",
            product.as_str()
        )
        .fetch_optional(&mut *tx)
        .await?;
        domain::set_stock(reserved.unwrap_or(0), on_hand)?;
        let row = sqlx::query!(
            "INSERT INTO stock_item (product_id, on_hand) VALUES ($1, $2)
             ON CONFLICT (product_id) DO UPDATE SET on_hand = EXCLUDED.on_hand, updated_at = now()
             RETURNING on_hand, reserved",
            product.as_str(),
            on_hand.get()
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StockLevel {
            product_id: product.clone(),
            on_hand: row.on_hand,
            reserved: row.reserved,
        })
    }

    /// `product`'s stock (none of any when never stocked).
    pub async fn stock(&self, product: &ProductId) -> Result<StockLevel, Error> {
        let row = sqlx::query!(
            "SELECT on_hand, reserved FROM stock_item WHERE product_id = $1",
            product.as_str()
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => StockLevel {
                product_id: product.clone(),
                on_hand: row.on_hand,
                reserved: row.reserved,
            },
            None => StockLevel::none(product.clone()),
        })
    }

    /// Reserves every line or none; a retry answers as the first time.
    pub async fn reserve(&self, id: &ReservationId, lines: &Lines) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query!(
            "INSERT INTO reservation (reservation_id, state) VALUES ($1, 'reserved')
             ON CONFLICT (reservation_id) DO NOTHING",
            id.as_str()
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            let existing = locked(&mut tx, id).await?.ok_or(Error::Internal)?;
            return Ok(domain::replay_reserve(&existing, lines)?);
        }
        let (products, quantities) = lines.columns();
        sqlx::query!(
            "INSERT INTO reservation_line (reservation_id, product_id, quantity)
             SELECT $1::text, line.product_id, line.quantity
             FROM UNNEST($2::text[], $3::bigint[]) AS line (product_id, quantity)",
            id.as_str(),
            &products,
            &quantities
        )
        .execute(&mut *tx)
        .await?;
        let stock = lock_stock(&mut tx, &products).await?;
        match domain::allocate(lines, &stock) {
            Ok(()) => {
                sqlx::query!(
                    "UPDATE stock_item s SET reserved = s.reserved + line.quantity, updated_at = now()
                     FROM UNNEST($1::text[], $2::bigint[]) AS line (product_id, quantity)
                     WHERE s.product_id = line.product_id",
                    &products,
                    &quantities
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }
            Err(InventoryError::Insufficient { product }) => {
                // Recorded, so that a retry is refused the same way.
                sqlx::query!(
                    "UPDATE reservation SET state = 'refused', refused_product = $2
                     WHERE reservation_id = $1",
                    id.as_str(),
                    product.as_str()
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Err(InventoryError::Insufficient { product }.into())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Gives a reservation's units back; a key never seen is recorded as
    /// released (a tombstone), so that it can never be reserved.
    pub async fn release(&self, id: &ReservationId) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let tombstone = sqlx::query!(
            "INSERT INTO reservation (reservation_id, state, tombstone) VALUES ($1, 'released', true)
             ON CONFLICT (reservation_id) DO NOTHING",
            id.as_str()
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !tombstone {
            let existing = locked(&mut tx, id).await?.ok_or(Error::Internal)?;
            if domain::release(&existing)? {
                let (products, quantities) = existing.lines.columns();
                lock_stock(&mut tx, &products).await?;
                sqlx::query!(
                    "UPDATE stock_item s SET reserved = s.reserved - line.quantity, updated_at = now()
                     FROM UNNEST($1::text[], $2::bigint[]) AS line (product_id, quantity)
                     WHERE s.product_id = line.product_id",
                    &products,
                    &quantities
                )
                .execute(&mut *tx)
                .await?;
                set_state(&mut tx, id, ReservationState::Released, None).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ships a reservation's units under `tracking` (or answers the tracking
    /// number it was shipped under).
    pub async fn dispatch(
        &self,
        id: &ReservationId,
        tracking: TrackingNumber,
    ) -> Result<TrackingNumber, Error> {
        let mut tx = self.pool.begin().await?;
        let existing = locked(&mut tx, id).await?.ok_or(InventoryError::NotFound)?;
        match domain::dispatch(&existing)? {
            Dispatch::Replay(tracking) => Ok(tracking),
            Dispatch::Ship => {
                let (products, quantities) = existing.lines.columns();
                lock_stock(&mut tx, &products).await?;
                sqlx::query!(
                    "UPDATE stock_item s
                     SET on_hand = s.on_hand - line.quantity,
                         reserved = s.reserved - line.quantity,
                         updated_at = now()
                     FROM UNNEST($1::text[], $2::bigint[]) AS line (product_id, quantity)
                     WHERE s.product_id = line.product_id",
                    &products,
                    &quantities
                )
                .execute(&mut *tx)
                .await?;
                set_state(&mut tx, id, ReservationState::Dispatched, Some(&tracking)).await?;
                tx.commit().await?;
                Ok(tracking)
            }
        }
    }

    /// The reservation with key `id`, if any.
    pub async fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>, Error> {
        let mut conn = self.pool.acquire().await?;
        read(&mut conn, id, false).await
    }
}

/// The reservation `id`, its row locked until the transaction ends.
async fn locked(
    tx: &mut Transaction<'static, Postgres>,
    id: &ReservationId,
) -> Result<Option<Reservation>, Error> {
    read(tx, id, true).await
}

/// Reads reservation `id` with its lines, locking its row when `lock`.
async fn read(
    conn: &mut PgConnection,
    id: &ReservationId,
    lock: bool,
) -> Result<Option<Reservation>, Error> {
    let row = if lock {
        sqlx::query!(
            "SELECT state, tombstone, refused_product, tracking_number
             FROM reservation WHERE reservation_id = $1 FOR UPDATE",
            id.as_str()
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.state, r.tombstone, r.refused_product, r.tracking_number))
    } else {
        sqlx::query!(
            "SELECT state, tombstone, refused_product, tracking_number
             FROM reservation WHERE reservation_id = $1",
            id.as_str()
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.state, r.tombstone, r.refused_product, r.tracking_number))
    };
    let Some((state, tombstone, refused_product, tracking_number)) = row else {
        return Ok(None);
    };
    let lines = sqlx::query!(
        "SELECT product_id, quantity FROM reservation_line WHERE reservation_id = $1",
        id.as_str()
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|line| {
        Ok(Line {
            product_id: stored_product(&line.product_id)?,
            quantity: line.quantity,
        })
    })
    .collect::<Result<Vec<_>, Error>>()?;
    Ok(Some(Reservation {
        id: id.clone(),
        state: ReservationState::from_stored(&state).ok_or_else(|| corrupt("state", &state))?,
        tombstone,
        lines: Lines::sorted(lines),
        refused_product: refused_product.as_deref().map(stored_product).transpose()?,
        tracking_number: tracking_number
            .as_deref()
            .map(|t| TrackingNumber::parse(t).map_err(|_| corrupt("tracking_number", t)))
            .transpose()?,
    }))
}

/// Locks the stock rows of `products` in product id order and reads them.
async fn lock_stock(
    tx: &mut Transaction<'static, Postgres>,
    products: &[String],
) -> Result<Vec<StockLevel>, Error> {
    sqlx::query!(
        "SELECT product_id, on_hand, reserved FROM stock_item
         WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE",
        products
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|row| {
        Ok(StockLevel {
            product_id: stored_product(&row.product_id)?,
            on_hand: row.on_hand,
            reserved: row.reserved,
        })
    })
    .collect()
}

/// Moves reservation `id` to `state`.
async fn set_state(
    tx: &mut Transaction<'static, Postgres>,
    id: &ReservationId,
    state: ReservationState,
    tracking: Option<&TrackingNumber>,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE reservation SET state = $2, tracking_number = COALESCE($3, tracking_number),
         updated_at = now() WHERE reservation_id = $1",
        id.as_str(),
        state.as_str(),
        tracking.map(TrackingNumber::as_str)
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A product id read back from the database.
fn stored_product(id: &str) -> Result<ProductId, Error> {
    ProductId::parse(id).map_err(|_| corrupt("product_id", id))
}

/// A stored value this build cannot read: logged, internal to clients.
fn corrupt(column: &str, value: &str) -> Error {
    tracing::error!(column, value, "unreadable value in the inventory database");
    Error::Internal
}
