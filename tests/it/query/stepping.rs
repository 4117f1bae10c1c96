//! The projector driven step by step, without the server: duplicates, gaps,
//! dead letters and fencing, each counted in the step outcomes.

use std::time::{Duration, Instant};

use orders::{
    domain::Event,
    query::{
        Projector, ReadModel, StepOutcome, projector::BatchSummary, read_model::DEFAULT_SCHEMA,
    },
};

use super::{OrderStream, Stack, placed, shipped};

async fn projector(stack: &Stack) -> Projector {
    let read_model = ReadModel::new(stack.pool.clone(), DEFAULT_SCHEMA).unwrap();
    read_model.migrate().await.unwrap();
    Projector::new(&stack.settings(), read_model).unwrap()
}

/// Steps until the stored positions reach the end of the topic; sums the batches.
async fn step_to_end(stack: &Stack, projector: &mut Projector) -> (BatchSummary, Vec<StepOutcome>) {
    let ends = super::high_watermarks(&stack.kafka);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut total = BatchSummary::default();
    let mut outcomes = vec![];
    loop {
        let stored = super::positions(&stack.pool, &stack.kafka.topic).await;
        if ends
            .iter()
            .all(|(p, &end)| end == 0 || stored.get(p) == Some(&end))
        {
            return (total, outcomes);
        }
        assert!(Instant::now() < deadline, "projector did not reach the end");
        let outcome = projector.step().await.expect("step");
        if let StepOutcome::Applied(batch) = &outcome {
            total.messages += batch.messages;
            total.applied += batch.applied;
            total.duplicates += batch.duplicates;
            total.parked += batch.parked;
            total.dead_lettered += batch.dead_lettered;
            total.deferred += batch.deferred;
        }
        outcomes.push(outcome);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_skip_duplicates_park_gaps_and_dead_letter_poison() {
    let stack = Stack::new("q_step", 1).await;
    let mut projector = projector(&stack).await;
    let mut order = OrderStream::new();
    let v1 = order.next(placed("ann"));
    let v2 = order.next(Event::OrderConfirmed);
    let v3 = order.next(shipped("1Z-STEP"));

    stack.produce(&[v1.clone(), v1, v3.clone()]).await;
    stack
        .produce_raw(Some(order.id().as_bytes()), b"\xff\xfe not protobuf", None)
        .await;
    let (first, _) = step_to_end(&stack, &mut projector).await;
    assert_eq!(
        (
            first.applied,
            first.duplicates,
            first.parked,
            first.dead_lettered
        ),
        (1, 1, 1, 1),
        "{first:?}"
    );

    stack.produce(&[v2, v3]).await;
    let (second, _) = step_to_end(&stack, &mut projector).await;
    assert_eq!(
        (second.applied, second.duplicates, second.parked),
        (2, 1, 0),
        "v2 and the parked v3 applied, the redelivered v3 skipped: {second:?}"
    );
    let metrics = projector.metrics();
    assert_eq!(metrics.gaps_total.get(), 1);
    let version = stack
        .count(&format!("SELECT version FROM {DEFAULT_SCHEMA}.order_view"))
        .await;
    assert_eq!(version, 3);
    projector.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_moved_by_another_owner_rolls_the_batch_back_and_seeks_to_it() {
    let stack = Stack::new("q_fence", 1).await;
    let mut projector = projector(&stack).await;
    let mut orders: Vec<OrderStream> = (0..5).map(|_| OrderStream::new()).collect();
    let events: Vec<_> = orders.iter_mut().map(|o| o.next(placed("ann"))).collect();
    stack.produce(&events).await;
    step_to_end(&stack, &mut projector).await;
    let before = stack.dump().await;

    // Another owner "moved" the position (here: back to 2) since this projector's last batch.
    sqlx::query(&format!(
        "UPDATE {DEFAULT_SCHEMA}.consumer_position SET next_offset = 2"
    ))
    .execute(&stack.pool)
    .await
    .unwrap();
    let mut late = OrderStream::new();
    stack.produce(&[late.next(placed("bob"))]).await;

    let (after, outcomes) = step_to_end(&stack, &mut projector).await;
    assert!(
        outcomes.contains(&StepOutcome::Rewound {
            partitions: vec![0]
        }),
        "{outcomes:?}"
    );
    assert_eq!(after.applied, 1, "only the new order: {after:?}");
    assert_eq!(
        after.duplicates, 3,
        "offsets 2-4 consumed again and skipped"
    );
    let now: Vec<String> = stack
        .dump()
        .await
        .into_iter()
        .filter(|row| !row.contains(&late.id()))
        .collect();
    assert_eq!(now, before);
    assert_eq!(projector.metrics().fenced_total.get(), 1);
    projector.close().await;
}
