//! Given/when/then over `decide` with a fake clock: the inputs so far, the
//! next input at a given second, then the calls intended and the state.

use super::*;

const T0: i64 = 1_800_000_000;

fn at(second: f64) -> Now {
    Now {
        at: DateTime::from_timestamp_micros(T0 * 1_000_000 + (second * 1e6) as i64).unwrap(),
        jitter: 0.5,
    }
}

fn order() -> OrderFacts {
    OrderFacts {
        order_id: Uuid::from_u128(7),
        customer_id: "cust-1".into(),
        lines: vec![("sku-1".into(), 2), ("sku-2".into(), 1)],
        amount_minor: 3_499,
        currency_code: "EUR".into(),
    }
}

fn done() -> Outcome {
    Outcome::Done {
        tracking_number: None,
    }
}

fn refused(code: &str, reason: &str) -> Outcome {
    Outcome::Refused {
        code: code.into(),
        reason: reason.into(),
    }
}

fn unavailable() -> Outcome {
    Outcome::Transient {
        code: "UNAVAILABLE".into(),
    }
}

fn answer(step: Step, attempt: u32, outcome: Outcome) -> Input {
    Input::Answer {
        step,
        attempt,
        outcome,
    }
}

fn call(step: Step, attempt: u32) -> Call {
    Call { step, attempt }
}

/// The saga after some inputs, each at its second.
struct Given(Option<Saga>);

fn given(inputs: &[(f64, Input)]) -> Given {
    let mut saga = None;
    for (second, input) in inputs {
        let decision = decide(saga.as_ref(), input, at(*second), &Timings::default())
            .unwrap_or_else(|refusal| panic!("given {input:?}: {refusal}"));
        saga = Some(decision.saga);
    }
    Given(saga)
}

struct Then(Result<Decision, Refusal>);

impl Given {
    fn when(&self, second: f64, input: Input) -> Then {
        Then(decide(
            self.0.as_ref(),
            &input,
            at(second),
            &Timings::default(),
        ))
    }
}

impl Then {
    #[track_caller]
    fn then_calls(self, calls: &[Call]) -> Saga {
        let decision = self.0.expect("a decision");
        assert_eq!(decision.calls, calls);
        decision.saga
    }

    #[track_caller]
    fn then_ignored(self) {
        assert!(matches!(self.0, Err(Refusal::Ignored(_))), "{:?}", self.0);
    }

    #[track_caller]
    fn then_not_allowed(self) -> String {
        match self.0 {
            Err(Refusal::NotAllowed(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// The inputs of a happy path up to (and including) the answer of `last`.
fn forward_through(last: Step) -> Vec<(f64, Input)> {
    let mut inputs = vec![(0.0, Input::Confirmed(order()))];
    let mut second = 1.0;
    for step in [
        Step::Reserve,
        Step::Authorize,
        Step::Dispatch,
        Step::Ship,
        Step::Capture,
    ] {
        let outcome = if step == Step::Dispatch {
            Outcome::Done {
                tracking_number: Some("1Z-TRACK".into()),
            }
        } else {
            done()
        };
        inputs.push((second, answer(step, 1, outcome)));
        second += 1.0;
        if step == last {
            break;
        }
    }
    inputs
}

#[test]
fn a_confirmed_order_reserves_stock_first() {
    let saga = given(&[])
        .when(0.0, Input::Confirmed(order()))
        .then_calls(&[call(Step::Reserve, 1)]);
    assert_eq!(
        (saga.phase, saga.step, saga.in_flight),
        (Phase::Forward, Step::Reserve, true)
    );
}

#[test]
fn the_happy_path_reserves_authorizes_dispatches_ships_then_captures() {
    let mut inputs = vec![(0.0, Input::Confirmed(order()))];
    for (step, next) in [
        (Step::Reserve, Step::Authorize),
        (Step::Authorize, Step::Dispatch),
        (Step::Dispatch, Step::Ship),
        (Step::Ship, Step::Capture),
    ] {
        let outcome = if step == Step::Dispatch {
            Outcome::Done {
                tracking_number: Some("1Z-TRACK".into()),
            }
        } else {
            done()
        };
        given(&inputs)
            .when(1.0, answer(step, 1, outcome.clone()))
            .then_calls(&[call(next, 1)]);
        inputs.push((1.0, answer(step, 1, outcome)));
    }
    let saga = given(&inputs)
        .when(2.0, answer(Step::Capture, 1, done()))
        .then_calls(&[]);
    assert_eq!(saga.phase, Phase::Completed);
    assert_eq!(saga.tracking_number.as_deref(), Some("1Z-TRACK"));
    assert_eq!(saga.last_status[&Step::Capture].code, "OK");
}

#[test]
fn the_same_confirmation_twice_starts_no_second_saga() {
    given(&[(0.0, Input::Confirmed(order()))])
        .when(1.0, Input::Confirmed(order()))
        .then_ignored();
}

#[test]
fn stock_short_cancels_the_order_naming_the_product_and_releases_nothing() {
    let saga = given(&[(0.0, Input::Confirmed(order()))])
        .when(
            1.0,
            answer(
                Step::Reserve,
                1,
                refused(
                    "FAILED_PRECONDITION",
                    "not enough stock of product sku-2: 0 available",
                ),
            ),
        )
        .then_calls(&[call(Step::CancelOrder, 1)]);
    assert_eq!(saga.phase, Phase::Compensating);
    assert_eq!(saga.cancel_reason.as_deref(), Some("out of stock: sku-2"));
    assert!(
        saga.pending.is_empty(),
        "nothing was reserved: {:?}",
        saga.pending
    );

    let done = given(&[
        (0.0, Input::Confirmed(order())),
        (
            1.0,
            answer(
                Step::Reserve,
                1,
                refused("FAILED_PRECONDITION", "not enough stock of product sku-2"),
            ),
        ),
    ])
    .when(2.0, answer(Step::CancelOrder, 1, done()))
    .then_calls(&[]);
    assert_eq!(done.phase, Phase::Cancelled);
}

#[test]
fn a_declined_payment_releases_the_reservation_then_cancels() {
    let inputs = [
        (0.0, Input::Confirmed(order())),
        (1.0, answer(Step::Reserve, 1, done())),
    ];
    let saga = given(&inputs)
        .when(
            2.0,
            answer(
                Step::Authorize,
                1,
                refused("FAILED_PRECONDITION", "payment declined"),
            ),
        )
        .then_calls(&[call(Step::Release, 1)]);
    // Nothing was authorized: no void.
    assert_eq!(saga.pending, [Step::CancelOrder]);
    assert_eq!(saga.cancel_reason.as_deref(), Some("payment declined"));
}

#[test]
fn an_unavailable_step_is_retried_with_backoff_under_its_deadline() {
    let inputs = [
        (0.0, Input::Confirmed(order())),
        (1.0, answer(Step::Reserve, 1, done())),
    ];
    let saga = given(&inputs)
        .when(2.0, answer(Step::Authorize, 1, unavailable()))
        .then_calls(&[]);
    // 200 ms for the first retry, the upper half jittered (0.5 → 150 ms).
    assert_eq!(saga.wake_at, Some(at(2.15).at));
    assert!(!saga.in_flight);
    assert_eq!(saga.last_status[&Step::Authorize].code, "UNAVAILABLE");

    // Not due yet: nothing; due: the same step again, attempt 2.
    let mut later = inputs.to_vec();
    later.push((2.0, answer(Step::Authorize, 1, unavailable())));
    given(&later).when(2.1, Input::Wake).then_ignored();
    let retried = given(&later)
        .when(2.2, Input::Wake)
        .then_calls(&[call(Step::Authorize, 2)]);
    // An answer to the first attempt, arriving late, is ignored.
    later.push((2.2, Input::Wake));
    given(&later)
        .when(2.3, answer(Step::Authorize, 1, done()))
        .then_ignored();
    // The second attempt answers: the saga goes on.
    given(&later)
        .when(2.4, answer(Step::Authorize, 2, done()))
        .then_calls(&[call(Step::Dispatch, 1)]);
    assert_eq!(retried.attempt, 2);
}

#[test]
fn backoff_doubles_and_is_capped() {
    let timings = Timings::default();
    let full = |attempt, jitter| backoff(attempt, jitter, &timings);
    assert_eq!(full(0, 0.0), Duration::from_millis(100));
    assert_eq!(full(0, 1.0), Duration::from_millis(200));
    assert_eq!(full(3, 1.0), Duration::from_millis(1_600));
    assert_eq!(full(30, 1.0), Duration::from_secs(10));
    assert_eq!(full(30, 0.0), Duration::from_secs(5));
}

#[test]
fn a_step_unavailable_past_its_deadline_compensates_and_cancels_with_the_reason() {
    let mut inputs = vec![
        (0.0, Input::Confirmed(order())),
        (1.0, answer(Step::Reserve, 1, done())),
        (2.0, answer(Step::Authorize, 1, unavailable())),
    ];
    // Retries stay under the deadline: the wake-up never passes it.
    let saga = given(&inputs).0.unwrap();
    assert!(saga.wake_at.unwrap() <= at(31.0).at + chrono::Duration::seconds(1));
    inputs.push((20.0, Input::Wake));
    inputs.push((21.0, answer(Step::Authorize, 2, unavailable())));
    inputs.push((31.9, Input::Wake));
    let saga = given(&inputs)
        .when(32.0, answer(Step::Authorize, 3, unavailable()))
        .then_calls(&[call(Step::Void, 1)]);
    assert_eq!(saga.phase, Phase::Compensating);
    assert_eq!(saga.pending, [Step::Release, Step::CancelOrder]);
    assert_eq!(
        saga.cancel_reason.as_deref(),
        Some("payments unavailable: authorize UNAVAILABLE for 30 s")
    );
}

#[test]
fn compensations_are_retried_until_answered_and_a_refusal_counts_as_done() {
    let inputs = vec![
        (0.0, Input::Confirmed(order())),
        (1.0, answer(Step::Reserve, 1, done())),
        (2.0, Input::Cancel),
        // The void, long after any deadline, is retried.
        (500.0, answer(Step::Void, 1, unavailable())),
    ];
    let saga = given(&inputs).0.unwrap();
    assert_eq!((saga.phase, saga.step), (Phase::Compensating, Step::Void));
    assert!(saga.wake_at.is_some());
    let mut inputs = inputs;
    inputs.push((501.0, Input::Wake));
    given(&inputs)
        .when(
            502.0,
            answer(
                Step::Void,
                2,
                refused("FAILED_PRECONDITION", "never authorized"),
            ),
        )
        .then_calls(&[call(Step::Release, 1)]);
}

#[test]
fn a_customer_cancel_in_flight_voids_and_releases_without_cancelling_again() {
    let inputs = [
        (0.0, Input::Confirmed(order())),
        (1.0, answer(Step::Reserve, 1, done())),
    ];
    // The authorization is in flight: it may have happened, so it is voided.
    let saga = given(&inputs)
        .when(1.5, Input::OrderCancelled)
        .then_calls(&[call(Step::Void, 1)]);
    assert_eq!(saga.pending, [Step::Release]);
    assert_eq!(
        saga.cancel_reason.as_deref(),
        Some("cancelled by the customer")
    );
    // The authorization's late answer is for a step the saga has left.
    let mut later = inputs.to_vec();
    later.push((1.5, Input::OrderCancelled));
    given(&later)
        .when(1.6, answer(Step::Authorize, 1, done()))
        .then_ignored();
    later.push((2.0, answer(Step::Void, 1, done())));
    later.push((3.0, answer(Step::Release, 1, done())));
    assert_eq!(given(&later).0.unwrap().phase, Phase::Cancelled);
}

#[test]
fn the_sagas_own_cancellation_event_changes_nothing() {
    let inputs = [
        (0.0, Input::Confirmed(order())),
        (
            1.0,
            answer(
                Step::Reserve,
                1,
                refused("FAILED_PRECONDITION", "product sku-1"),
            ),
        ),
        (2.0, answer(Step::CancelOrder, 1, done())),
    ];
    given(&inputs)
        .when(3.0, Input::OrderCancelled)
        .then_ignored();
    // Heard while its CancelOrder is in flight: nothing more is called.
    let in_flight = given(&inputs[..2])
        .when(1.5, Input::OrderCancelled)
        .then_calls(&[]);
    assert_eq!(in_flight.step, Step::CancelOrder);
}

#[test]
fn after_ship_the_saga_only_moves_forward() {
    let shipped = forward_through(Step::Ship);
    given(&shipped)
        .when(9.0, Input::OrderCancelled)
        .then_ignored();
    let why = given(&shipped).when(9.0, Input::Cancel).then_not_allowed();
    assert!(why.contains("shipped"), "{why}");
    // Capture is retried long past any deadline.
    let saga = given(&shipped)
        .when(900.0, answer(Step::Capture, 1, unavailable()))
        .then_calls(&[]);
    assert_eq!((saga.phase, saga.step), (Phase::Forward, Step::Capture));
    assert!(saga.wake_at.is_some());
}

#[test]
fn an_operator_cannot_cancel_once_the_dispatch_is_called() {
    let authorized = forward_through(Step::Authorize);
    let why = given(&authorized)
        .when(9.0, Input::Cancel)
        .then_not_allowed();
    assert!(why.contains("dispatched"), "{why}");
    let why = given(&forward_through(Step::Dispatch))
        .when(9.0, Input::Cancel)
        .then_not_allowed();
    assert!(why.contains("only moves forward"), "{why}");
}

#[test]
fn an_unavailable_dispatch_is_retried_past_any_deadline() {
    let saga = given(&forward_through(Step::Authorize))
        .when(900.0, answer(Step::Dispatch, 1, unavailable()))
        .then_calls(&[]);
    assert_eq!((saga.phase, saga.step), (Phase::Forward, Step::Dispatch));
    assert!(saga.wake_at.is_some());
}

#[test]
fn a_refused_ship_compensates_everything() {
    let dispatched = forward_through(Step::Dispatch);
    let saga = given(&dispatched)
        .when(
            9.0,
            answer(
                Step::Ship,
                1,
                refused("FAILED_PRECONDITION", "order is cancelled"),
            ),
        )
        .then_calls(&[call(Step::Void, 1)]);
    assert_eq!(saga.pending, [Step::Release, Step::CancelOrder]);
}

#[test]
fn an_operator_retries_a_stuck_step_with_a_fresh_deadline_and_cancels_before_shipping() {
    let stuck = vec![
        (0.0, Input::Confirmed(order())),
        (1.0, answer(Step::Reserve, 1, done())),
        (2.0, answer(Step::Authorize, 1, unavailable())),
    ];
    let retried = given(&stuck)
        .when(3.0, Input::Retry)
        .then_calls(&[call(Step::Authorize, 2)]);
    assert_eq!(retried.step_started, at(3.0).at, "a fresh deadline");
    assert_eq!(
        retried.remaining(),
        [Step::Dispatch, Step::Ship, Step::Capture]
    );
    let cancelled = given(&stuck)
        .when(3.0, Input::Cancel)
        .then_calls(&[call(Step::Void, 1)]);
    assert_eq!(cancelled.pending, [Step::Release, Step::CancelOrder]);
    assert_eq!(
        cancelled.cancel_reason.as_deref(),
        Some("cancelled by an operator")
    );

    let completed = forward_through(Step::Capture);
    given(&completed).when(9.0, Input::Retry).then_not_allowed();
    given(&[]).when(0.0, Input::Retry).then_not_allowed();
}

#[test]
fn wake_ups_for_a_finished_or_busy_saga_are_ignored() {
    given(&forward_through(Step::Capture))
        .when(99.0, Input::Wake)
        .then_ignored();
    given(&[(0.0, Input::Confirmed(order()))])
        .when(99.0, Input::Wake)
        .then_ignored();
    given(&[]).when(0.0, Input::Wake).then_ignored();
}

#[test]
fn the_product_is_read_from_the_stock_refusal() {
    assert_eq!(
        out_of_stock_product("not enough stock of product sku-9: 1 on hand, 2 wanted"),
        "sku-9"
    );
    assert_eq!(out_of_stock_product("product \"sku-1\""), "sku-1");
    assert_eq!(out_of_stock_product("sold out"), "sold out");
}
