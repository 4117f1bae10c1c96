//! The Payments stand-in's SQL: one row per payment key
//! (`migrations/payments`). Each RPC claims its key's row by an insert, or
//! locks it, then asks the rules in `domain` and applies the verdict.

use sqlx::{PgConnection, PgPool};

use super::{
    Error,
    domain::{self, Amount, Authorization, Payment, PaymentError, PaymentId, PaymentState},
};
use crate::domain::{CurrencyCode, CustomerId};

/// The payments database.
#[derive(Debug, Clone)]
pub struct PaymentStore {
    pool: PgPool,
    decline_above_minor: i64,
}

impl PaymentStore {
    /// A store over `pool` that declines authorizations above `decline_above_minor`.
    pub fn new(pool: PgPool, decline_above_minor: i64) -> Self {
        Self {
            pool,
            decline_above_minor,
        }
    }

    /// Authorizes (or declines) `request` under key `id`; a retry answers as the first time.
    pub async fn authorize(&self, id: &PaymentId, request: &Authorization) -> Result<(), Error> {
        let verdict = domain::authorize(request, self.decline_above_minor);
        let claimed = sqlx::query!(
            "INSERT INTO payment (payment_id, state, customer_id, amount_minor, currency_code)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (payment_id) DO NOTHING",
            id.as_str(),
            verdict.as_str(),
            request.customer_id.as_str(),
            request.amount.get(),
            request.currency.as_str()
        )
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            return Ok(domain::answer_authorize(verdict)?);
        }
        // What a retry is compared with never changes: no lock needed.
        let mut conn = self.pool.acquire().await?;
        let existing = read(&mut conn, id, false).await?.ok_or(Error::Internal)?;
        Ok(domain::replay_authorize(&existing, request)?)
    }

    /// Captures payment `id`; a retry answers as the first time.
    pub async fn capture(&self, id: &PaymentId) -> Result<Payment, Error> {
        let mut tx = self.pool.begin().await?;
        let mut payment = read(&mut tx, id, true)
            .await?
            .ok_or(PaymentError::NotFound)?;
        if domain::capture(&payment)? {
            payment.state = PaymentState::Captured;
            set_state(&mut tx, id, payment.state).await?;
        }
        tx.commit().await?;
        Ok(payment)
    }

    /// Voids payment `id`; a key never seen is recorded as voided (a
    /// tombstone), so that it can never be authorized.
    pub async fn void(&self, id: &PaymentId) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let tombstone = sqlx::query!(
            "INSERT INTO payment (payment_id, state, tombstone) VALUES ($1, 'voided', true)
             ON CONFLICT (payment_id) DO NOTHING",
            id.as_str()
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !tombstone {
            let payment = read(&mut tx, id, true).await?.ok_or(Error::Internal)?;
            if domain::void(&payment)? {
                set_state(&mut tx, id, PaymentState::Voided).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Payment `id`, if any.
    pub async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>, Error> {
        let mut conn = self.pool.acquire().await?;
        read(&mut conn, id, false).await
    }
}

/// Reads payment `id`, locking its row when `lock`.
async fn read(
    conn: &mut PgConnection,
    id: &PaymentId,
    lock: bool,
) -> Result<Option<Payment>, Error> {
    let row = if lock {
        sqlx::query!(
            "SELECT state, customer_id, amount_minor, currency_code
             FROM payment WHERE payment_id = $1 FOR UPDATE",
            id.as_str()
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.state, r.customer_id, r.amount_minor, r.currency_code))
    } else {
        sqlx::query!(
            "SELECT state, customer_id, amount_minor, currency_code
             FROM payment WHERE payment_id = $1",
            id.as_str()
        )
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| (r.state, r.customer_id, r.amount_minor, r.currency_code))
    };
    let Some((state, customer_id, amount_minor, currency_code)) = row else {
        return Ok(None);
    };
    let authorization = match (customer_id, currency_code) {
        (Some(customer_id), Some(currency)) => Some(Authorization {
            customer_id: CustomerId::parse(&customer_id)
                .map_err(|_| corrupt("customer_id", &customer_id))?,
            amount: Amount::parse(amount_minor)
                .map_err(|_| corrupt("amount_minor", &amount_minor.to_string()))?,
            currency: CurrencyCode::parse(&currency)
                .map_err(|_| corrupt("currency_code", &currency))?,
        }),
        _ => None,
    };
    Ok(Some(Payment {
        id: id.clone(),
        state: PaymentState::from_stored(&state).ok_or_else(|| corrupt("state", &state))?,
        authorization,
    }))
}

/// Moves payment `id` to `state`.
async fn set_state(
    conn: &mut PgConnection,
    id: &PaymentId,
    state: PaymentState,
) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE payment SET state = $2, updated_at = now() WHERE payment_id = $1",
        id.as_str(),
        state.as_str()
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A stored value this build cannot read: logged, internal to clients.
fn corrupt(column: &str, value: &str) -> Error {
    tracing::error!(column, value, "unreadable value in the payments database");
    Error::Internal
}
