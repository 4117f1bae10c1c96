//! The fulfilment saga of one order, as a pure function: `decide(saga, input,
//! now)` returns the saga's next state and the calls it intends to make. No
//! I/O and no clock of its own: the worker stores what `decide` returns (state
//! and intents in one transaction), makes each call only from a stored
//! intent, and feeds the call's outcome back as an input.
//!
//! The steps, forward: ReserveStock → AuthorizePayment → DispatchReservation
//! → ShipOrder → CapturePayment. ShipOrder is the point of no return: once it
//! is applied the saga only moves forward. Before it, a refusal, a reserve or
//! authorize that stays unavailable past its deadline, a customer's
//! cancellation or an operator's cancel (only before the dispatch is called)
//! compensates in reverse (VoidPayment, ReleaseReservation) and, unless the
//! customer cancelled, cancels the order with the reason.
//!
//! Every call of a step uses one idempotency key for all its attempts, so a
//! retry after a timeout settles the first attempt's outcome instead of
//! guessing it. A transient failure is retried with exponential backoff and
//! jitter; an answer or a wake-up for a step or attempt the saga has left is
//! ignored. Compensations, DispatchReservation, ShipOrder and CapturePayment
//! are retried until they are answered: they have no deadline to give up at.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What the saga knows of the order it fulfils (from `OrderConfirmed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    /// The order.
    pub order_id: Uuid,
    /// Its customer.
    pub customer_id: String,
    /// Product and quantity of each line.
    pub lines: Vec<(String, u32)>,
    /// The order's total in minor units.
    pub amount_minor: i64,
    /// Its currency.
    pub currency_code: String,
}

/// One call the saga makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// `Inventory.ReserveStock`.
    Reserve,
    /// `Payments.AuthorizePayment`.
    Authorize,
    /// `Inventory.DispatchReservation`.
    Dispatch,
    /// `OrderCommands.ShipOrder`.
    Ship,
    /// `Payments.CapturePayment`.
    Capture,
    /// `Payments.VoidPayment` (compensation).
    Void,
    /// `Inventory.ReleaseReservation` (compensation).
    Release,
    /// `OrderCommands.CancelOrder` (compensation).
    CancelOrder,
}

impl Step {
    /// Every step, forward ones first.
    pub const ALL: [Self; 8] = [
        Self::Reserve,
        Self::Authorize,
        Self::Dispatch,
        Self::Ship,
        Self::Capture,
        Self::Void,
        Self::Release,
        Self::CancelOrder,
    ];

    /// The step named `name` (as `name` gives it).
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The step's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Authorize => "authorize",
            Self::Dispatch => "dispatch",
            Self::Ship => "ship",
            Self::Capture => "capture",
            Self::Void => "void",
            Self::Release => "release",
            Self::CancelOrder => "cancel_order",
        }
    }

    /// The service a failure of the step is blamed on, for a cancel reason.
    fn service(self) -> &'static str {
        match self {
            Self::Reserve | Self::Dispatch | Self::Release => "inventory",
            Self::Authorize | Self::Capture | Self::Void => "payments",
            Self::Ship | Self::CancelOrder => "orders",
        }
    }

    /// Whether the step gives up at its deadline (and the saga compensates).
    /// A dispatch does not: goods that may have left cannot be released, so
    /// its outcome is learnt by asking again until it is answered.
    pub fn may_give_up(self) -> bool {
        matches!(self, Self::Reserve | Self::Authorize)
    }

    /// The forward step after this one.
    fn next(self) -> Option<Self> {
        match self {
            Self::Reserve => Some(Self::Authorize),
            Self::Authorize => Some(Self::Dispatch),
            Self::Dispatch => Some(Self::Ship),
            Self::Ship => Some(Self::Capture),
            _ => None,
        }
    }
}

/// Where the saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Going forward, `step` in flight.
    Forward,
    /// Undoing, `step` in flight, `pending` after it.
    Compensating,
    /// Shipped and paid.
    Completed,
    /// Compensated (and the order cancelled).
    Cancelled,
    /// A step after the point of no return was refused: an operator must look.
    Failed,
}

impl Phase {
    /// The phase's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// Whether the saga is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Failed)
    }
}

/// How one attempt of a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; `DispatchReservation` gives the tracking number.
    Done {
        /// The tracking number, from a dispatch.
        tracking_number: Option<String>,
    },
    /// Refused for good (FAILED_PRECONDITION and the like): `reason` says why.
    Refused {
        /// The gRPC code's name.
        code: String,
        /// What the service said.
        reason: String,
    },
    /// Not answered (UNAVAILABLE, DEADLINE_EXCEEDED, a broken connection):
    /// the same call, with the same key, settles it later.
    Transient {
        /// The gRPC code's name.
        code: String,
    },
}

/// The last status of a step's calls, for the admin view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStatus {
    /// The gRPC code's name (`OK` when done).
    pub code: String,
    /// The attempt it came from.
    pub attempt: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// What can happen to a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `OrderConfirmed`: start.
    Confirmed(OrderFacts),
    /// `OrderCancelled`: the order was cancelled (by the customer, or by
    /// this saga's own CancelOrder).
    OrderCancelled,
    /// A call's attempt ended.
    Answer {
        /// The step called.
        step: Step,
        /// Its attempt.
        attempt: u32,
        /// How it ended.
        outcome: Outcome,
    },
    /// The wake-up the saga asked for (`Saga::wake_at`) is due.
    Wake,
    /// An operator asks to try the current step again now, with a fresh deadline.
    Retry,
    /// An operator asks to compensate and cancel the order.
    Cancel,
}

/// The timings of the saga: deadlines and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a step that may give up keeps retrying before the saga compensates.
    pub step_deadline: Duration,
    /// The first retry's delay; doubled per attempt.
    pub backoff: Duration,
    /// The longest delay between attempts.
    pub max_backoff: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            step_deadline: Duration::from_secs(30),
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// The moment `decide` decides at, and the randomness it may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// The time.
    pub at: DateTime<Utc>,
    /// A number in [0, 1) for the backoff's jitter.
    pub jitter: f64,
}

/// One call the saga intends to make: a stored intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Call {
    /// What to call.
    pub step: Step,
    /// Which attempt (keys do not change between attempts).
    pub attempt: u32,
}

/// One order's fulfilment.
#[derive(Debug, Clone, PartialEq)]
pub struct Saga {
    /// The order.
    pub order: OrderFacts,
    /// Where it is.
    pub phase: Phase,
    /// The step in flight (the last one, once finished).
    pub step: Step,
    /// Attempts of `step` so far (the one in flight included).
    pub attempt: u32,
    /// Compensations after `step`, in order.
    pub pending: Vec<Step>,
    /// When `step` began: its deadline counts from here.
    pub step_started: DateTime<Utc>,
    /// When the worker is to wake the saga (`Input::Wake`): the next attempt.
    pub wake_at: Option<DateTime<Utc>>,
    /// Whether a call is in flight (an intent is stored and not answered).
    pub in_flight: bool,
    /// From the dispatch.
    pub tracking_number: Option<String>,
    /// Why the order is being (or was) cancelled.
    pub cancel_reason: Option<String>,
    /// Whether the order was cancelled by someone else (no CancelOrder then).
    pub order_cancelled: bool,
    /// The last status of each step's calls.
    pub last_status: BTreeMap<Step, CallStatus>,
}

/// What `decide` returns: the state to store and the calls to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The saga after the input.
    pub saga: Saga,
    /// Calls to store as intents with it.
    pub calls: Vec<Call>,
}

/// Why `decide` refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Nothing to do: a duplicate, a stale answer or wake-up, an input for no saga.
    #[error("nothing to do: {0}")]
    Ignored(&'static str),
    /// An operator's request that the saga's state does not allow.
    #[error("{0}")]
    NotAllowed(String),
}

/// The saga after `input` at `now`, or why the input changes nothing.
pub fn decide(
    saga: Option<&Saga>,
    input: &Input,
    now: Now,
    timings: &Timings,
) -> Result<Decision, Refusal> {
    let Some(saga) = saga else {
        return match input {
            Input::Confirmed(order) => Ok(start(order.clone(), now)),
            Input::Retry | Input::Cancel => {
                Err(Refusal::NotAllowed("no fulfilment for this order".into()))
            }
            _ => Err(Refusal::Ignored("no saga for this order")),
        };
    };
    let mut next = saga.clone();
    match input {
        Input::Confirmed(_) => Err(Refusal::Ignored("the order is already being fulfilled")),
        Input::OrderCancelled => next.order_cancelled_by_someone(now),
        Input::Answer {
            step,
            attempt,
            outcome,
        } => {
            if saga.phase.is_finished()
                || *step != saga.step
                || *attempt != saga.attempt
                || !saga.in_flight
            {
                return Err(Refusal::Ignored("an answer to a call the saga has left"));
            }
            next.in_flight = false;
            next.record(*step, *attempt, outcome, now.at);
            next.answered(outcome, now, timings)
        }
        Input::Wake => {
            let due = saga.wake_at.is_some_and(|at| at <= now.at);
            if saga.phase.is_finished() || saga.in_flight || !due {
                return Err(Refusal::Ignored("a wake-up that is not due"));
            }
            Ok(next.call_again(now))
        }
        Input::Retry => {
            if saga.phase.is_finished() {
                return Err(Refusal::NotAllowed(format!(
                    "the saga is {}; there is nothing to retry",
                    saga.phase.name()
                )));
            }
            // A fresh deadline; attempts go on counting (each has its own intent).
            next.step_started = now.at;
            Ok(next.call_again(now))
        }
        Input::Cancel => match saga.phase {
            Phase::Forward if saga.step < Step::Dispatch => {
                Ok(next.compensate(now, "cancelled by an operator".into()))
            }
            Phase::Forward if saga.step < Step::Capture => Err(Refusal::NotAllowed(
                "the reservation may be dispatched and the order shipped: its fulfilment only \
                 moves forward"
                    .into(),
            )),
            Phase::Forward => Err(Refusal::NotAllowed(
                "the order is shipped: its fulfilment only moves forward".into(),
            )),
            Phase::Compensating => Err(Refusal::NotAllowed(
                "the saga is already compensating".into(),
            )),
            phase => Err(Refusal::NotAllowed(format!(
                "the saga is {}; there is nothing to cancel",
                phase.name()
            ))),
        },
    }
}

/// A new saga, reserving stock.
fn start(order: OrderFacts, now: Now) -> Decision {
    let saga = Saga {
        order,
        phase: Phase::Forward,
        step: Step::Reserve,
        attempt: 0,
        pending: vec![],
        step_started: now.at,
        wake_at: None,
        in_flight: false,
        tracking_number: None,
        cancel_reason: None,
        order_cancelled: false,
        last_status: BTreeMap::new(),
    };
    saga.call_again(now)
}

/// The delay before attempt `attempt + 1` after attempt `attempt` failed:
/// `backoff · 2^attempt` capped at `max_backoff`, the upper half jittered.
pub fn backoff(attempt: u32, jitter: f64, timings: &Timings) -> Duration {
    let full = timings
        .backoff
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(timings.max_backoff);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

fn after(at: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    at + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
}

impl Saga {
    /// The steps after the current one, in order.
    pub fn remaining(&self) -> Vec<Step> {
        match self.phase {
            Phase::Forward => std::iter::successors(self.step.next(), |s| s.next()).collect(),
            Phase::Compensating => self.pending.clone(),
            _ => vec![],
        }
    }

    /// The saga with the next attempt of its step as an intent.
    fn call_again(mut self, _now: Now) -> Decision {
        self.attempt += 1;
        self.in_flight = true;
        self.wake_at = None;
        let call = Call {
            step: self.step,
            attempt: self.attempt,
        };
        Decision {
            saga: self,
            calls: vec![call],
        }
    }

    /// The saga moved on to `step`, calling it.
    fn begin(mut self, step: Step, now: Now) -> Decision {
        self.step = step;
        self.attempt = 0;
        self.step_started = now.at;
        self.call_again(now)
    }

    /// The saga finished in `phase`.
    fn finish(mut self, phase: Phase) -> Decision {
        self.phase = phase;
        self.wake_at = None;
        self.in_flight = false;
        Decision {
            saga: self,
            calls: vec![],
        }
    }

    fn record(&mut self, step: Step, attempt: u32, outcome: &Outcome, at: DateTime<Utc>) {
        let code = match outcome {
            Outcome::Done { .. } => "OK".to_owned(),
            Outcome::Refused { code, .. } | Outcome::Transient { code } => code.clone(),
        };
        self.last_status
            .insert(step, CallStatus { code, attempt, at });
    }

    /// Compensations for a saga abandoned during `self.step` (before the
    /// point of no return), then CancelOrder with `reason` unless the order
    /// is cancelled already. A step in flight may have taken effect: its
    /// compensation is included (on a key never seen it leaves a tombstone,
    /// which refuses the late call).
    fn compensate(mut self, now: Now, reason: String) -> Decision {
        let mut steps = vec![];
        if self.may_have_taken_effect(Step::Authorize) {
            steps.push(Step::Void);
        }
        if self.may_have_taken_effect(Step::Reserve) {
            steps.push(Step::Release);
        }
        if !self.order_cancelled {
            steps.push(Step::CancelOrder);
        }
        self.phase = Phase::Compensating;
        self.cancel_reason.get_or_insert(reason);
        self.in_flight = false;
        let first = steps.remove(0);
        self.pending = steps;
        self.begin(first, now)
    }

    /// Whether `step` may have taken effect: it is behind the saga, or it is
    /// the current step and was not refused for good (in flight, or not
    /// answered).
    fn may_have_taken_effect(&self, step: Step) -> bool {
        self.step > step
            || (self.step == step
                && (self.in_flight
                    || self
                        .last_status
                        .get(&step)
                        .is_none_or(|s| is_transient_code(&s.code))))
    }

    /// The next compensation, or the end.
    fn compensate_next(mut self, now: Now) -> Decision {
        if self.pending.is_empty() {
            return self.finish(Phase::Cancelled);
        }
        let step = self.pending.remove(0);
        self.begin(step, now)
    }

    fn order_cancelled_by_someone(mut self, now: Now) -> Result<Decision, Refusal> {
        if self.order_cancelled {
            return Err(Refusal::Ignored("the cancellation is known"));
        }
        self.order_cancelled = true;
        match self.phase {
            // Before the point of no return: undo, but do not cancel again.
            Phase::Forward if self.step < Step::Capture => {
                Ok(self.compensate(now, "cancelled by the customer".into()))
            }
            // Compensating (perhaps its own CancelOrder's event): no
            // CancelOrder is needed any more, unless one is in flight.
            Phase::Compensating => {
                self.pending.retain(|s| *s != Step::CancelOrder);
                Ok(Decision {
                    saga: self,
                    calls: vec![],
                })
            }
            _ => Err(Refusal::Ignored(
                "a cancellation after the point of no return or the end",
            )),
        }
    }

    fn answered(
        mut self,
        outcome: &Outcome,
        now: Now,
        timings: &Timings,
    ) -> Result<Decision, Refusal> {
        let step = self.step;
        Ok(match (self.phase, outcome) {
            (Phase::Forward, Outcome::Done { tracking_number }) => {
                if step == Step::Dispatch {
                    self.tracking_number.clone_from(tracking_number);
                }
                match step.next() {
                    Some(next) => self.begin(next, now),
                    None => self.finish(Phase::Completed),
                }
            }
            (Phase::Forward, Outcome::Refused { reason, .. }) => match step {
                Step::Reserve => {
                    let reason = format!("out of stock: {}", out_of_stock_product(reason));
                    self.compensate(now, reason)
                }
                Step::Authorize => self.compensate(now, "payment declined".into()),
                Step::Dispatch | Step::Ship => {
                    let reason = format!("{} refused: {reason}", step.name());
                    self.compensate(now, reason)
                }
                _ => {
                    self.cancel_reason = Some(format!("{} refused: {reason}", step.name()));
                    self.finish(Phase::Failed)
                }
            },
            // A compensation is done when it is done or refused (nothing to
            // undo: released or voided already, or never there).
            (Phase::Compensating, Outcome::Done { .. } | Outcome::Refused { .. }) => {
                self.compensate_next(now)
            }
            (_, Outcome::Transient { code }) => {
                let deadline = after(self.step_started, timings.step_deadline);
                if self.phase == Phase::Forward && step.may_give_up() && now.at >= deadline {
                    let reason = format!(
                        "{} unavailable: {} {code} for {} s",
                        step.service(),
                        step.name(),
                        timings.step_deadline.as_secs()
                    );
                    self.compensate(now, reason)
                } else {
                    let mut at = after(now.at, backoff(self.attempt - 1, now.jitter, timings));
                    if self.phase == Phase::Forward && step.may_give_up() {
                        at = at.min(deadline);
                    }
                    self.wake_at = Some(at);
                    Decision {
                        saga: self,
                        calls: vec![],
                    }
                }
            }
            (phase, _) => {
                return Err(Refusal::NotAllowed(format!(
                    "an answer while {}",
                    phase.name()
                )));
            }
        })
    }
}

/// Whether a gRPC code (by its canonical name) leaves a call's outcome
/// unsettled, to be retried with the same key. A refused token counts: it is
/// the caller's configuration to fix, not a reason to cancel orders.
pub fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "UNAVAILABLE"
            | "DEADLINE_EXCEEDED"
            | "CANCELLED"
            | "RESOURCE_EXHAUSTED"
            | "UNKNOWN"
            | "ABORTED"
            | "INTERNAL"
            | "UNAUTHENTICATED"
            | "PERMISSION_DENIED"
    )
}

/// The product a stock refusal names (Inventory says `… product <id> …`);
/// the whole message when it names none.
fn out_of_stock_product(reason: &str) -> &str {
    reason
        .split_once("product ")
        .map_or(reason, |(_, rest)| {
            rest.split(|c: char| c.is_whitespace() || c == ':' || c == ',')
                .next()
                .filter(|p| !p.is_empty())
                .unwrap_or(rest)
        })
        .trim_matches(|c| c == '"' || c == '\'' || c == '`')
}

#[cfg(test)]
mod tests;
