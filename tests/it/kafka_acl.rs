//! The broker's authentication and ACLs as the dev stack sets them up
//! (ARCHITECTURE.md, "Kafka principals"): every client authenticates with
//! SASL/SCRAM, only the relay's user writes the topics, the query side's user
//! reads them in its groups, only the admin user creates topics.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use orders::{
    config::{KafkaSettings, Secret},
    kafka::{self, TopicStatus},
};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    producer::{
        BaseProducer, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
    },
};

use crate::support::{self, KafkaUser};

/// Bound on one delivery or one read that the broker answers.
const ANSWERED: Duration = Duration::from_secs(30);

/// A fresh topic, created by the admin user.
async fn fresh_topic(prefix: &str) -> KafkaSettings {
    let kafka = support::fresh_kafka(prefix);
    support::create_topic(&kafka).await;
    kafka
}

/// Produces one message to `kafka.topic` as `user`: with the relay's own
/// producer settings (idempotent) or a plain producer. The error is the
/// producer's fatal one if it had one (the idempotent producer's), else the
/// delivery's.
async fn produce_as(
    kafka: &KafkaSettings,
    user: KafkaUser,
    idempotent: bool,
) -> Result<(), RDKafkaErrorCode> {
    let settings = support::kafka_as(kafka, user);
    let producer: FutureProducer = if idempotent {
        kafka::idempotent_producer(&settings).expect("producer")
    } else {
        kafka::base_config(&settings)
            .expect("client configuration")
            .set("acks", "all")
            .set("message.timeout.ms", "15000")
            .create()
            .expect("producer")
    };
    let sent = producer
        .send(
            FutureRecord::to(&kafka.topic).key("k").payload("v"),
            ANSWERED,
        )
        .await;
    match sent {
        Ok(_) => Ok(()),
        Err((error, _)) => Err(producer
            .client()
            .fatal_error()
            .map(|(code, _)| code)
            .or(error.rdkafka_error_code())
            .unwrap_or_else(|| panic!("no error code in {error:?}"))),
    }
}

/// A consumer of `kafka.topic` as `user` in `group`, from the beginning.
fn consumer_as(kafka: &KafkaSettings, user: KafkaUser, group: &str) -> StreamConsumer {
    let consumer: StreamConsumer = kafka::base_config(&support::kafka_as(kafka, user))
        .expect("client configuration")
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&kafka.topic]).expect("subscribe");
    consumer
}

/// The code of the first error `consumer` reports within the bound; panics
/// on a message.
async fn first_error(consumer: &StreamConsumer) -> Option<RDKafkaErrorCode> {
    match tokio::time::timeout(ANSWERED, consumer.recv()).await {
        Ok(Err(error)) => error.rdkafka_error_code(),
        Ok(Ok(message)) => panic!("read a message at offset {}", message.offset()),
        Err(_) => panic!("no error within {ANSWERED:?}"),
    }
}

/// Reads `consumer` until it reports `wanted` (within the bound; other
/// errors may come first); panics on a message.
async fn reports(consumer: &StreamConsumer, wanted: RDKafkaErrorCode) {
    let deadline = Instant::now() + ANSWERED;
    let mut seen = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Err(error)) if error.rdkafka_error_code() == Some(wanted) => return,
            Ok(Err(error)) => seen.push(error),
            Ok(Ok(message)) => panic!("read a message at offset {}", message.offset()),
            Err(_) => panic!("no {wanted:?} within {ANSWERED:?}; saw {seen:?}"),
        }
    }
}

/// The errors a client reported through its callback.
#[derive(Clone, Default)]
struct Reported(Arc<Mutex<Vec<String>>>);

impl ClientContext for Reported {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Reported {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Asks the broker for metadata with `config`; the request must fail. Returns
/// what the client reported meanwhile.
async fn metadata_refused(config: ClientConfig) -> Vec<String> {
    let reported = Reported::default();
    let client: BaseProducer<Reported> = config
        .create_with_context(reported.clone())
        .expect("client");
    tokio::task::spawn_blocking(move || {
        let answer = client.client().fetch_metadata(None, Duration::from_secs(5));
        assert!(answer.is_err(), "the broker answered this client");
        // Serves the error callbacks.
        for _ in 0..10 {
            client.poll(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    reported.0.lock().unwrap().clone()
}

#[tokio::test]
async fn a_producer_with_the_query_users_credentials_is_refused_by_the_broker() {
    let kafka = fresh_topic("acl_q_produce").await;

    assert_eq!(
        produce_as(&kafka, KafkaUser::Query, false).await,
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    // The relay's idempotent producer is refused before it sends anything:
    // without WRITE on some topic there is no producer id (IDEMPOTENT_WRITE
    // on the cluster), a fatal error.
    assert_eq!(
        produce_as(&kafka, KafkaUser::Query, true).await,
        Err(RDKafkaErrorCode::ClusterAuthorizationFailed)
    );
    // Nor the admin user: only the relay writes.
    assert_eq!(
        produce_as(&kafka, KafkaUser::Admin, false).await,
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(produce_as(&kafka, KafkaUser::Relay, true).await, Ok(()));
}

#[tokio::test]
async fn a_client_without_credentials_or_with_a_wrong_password_gets_nothing() {
    // PLAINTEXT against the SASL listener: the broker drops the connection.
    let mut anonymous = ClientConfig::new();
    anonymous.set("bootstrap.servers", support::bootstrap());
    metadata_refused(anonymous).await;

    // The relay's name with a wrong password: SCRAM fails.
    let mut wrong = support::kafka_as(
        &KafkaSettings::new(support::bootstrap(), ""),
        KafkaUser::Relay,
    );
    wrong.password_file = None;
    wrong.password = Some(Secret::new("not-the-password"));
    let reported = metadata_refused(kafka::base_config(&wrong).unwrap()).await;
    assert!(
        reported
            .iter()
            .any(|text| text.contains("SASL authentication error")),
        "no authentication failure reported: {reported:?}"
    );
    assert!(
        reported
            .iter()
            .all(|text| !text.contains("not-the-password")),
        "{reported:?}"
    );
}

#[tokio::test]
async fn the_query_user_reads_the_topic_in_its_groups_and_only_there() {
    let kafka = fresh_topic("acl_q_read").await;
    assert_eq!(produce_as(&kafka, KafkaUser::Relay, true).await, Ok(()));

    let consumer = consumer_as(&kafka, KafkaUser::Query, &support::unique("acl_group"));
    let message = tokio::time::timeout(ANSWERED, consumer.recv())
        .await
        .expect("a message within the bound")
        .expect("the query user reads its topic");
    assert_eq!(message.payload(), Some(&b"v"[..]));
    consumer
        .commit_message(&message, CommitMode::Sync)
        .expect("and commits offsets in its group");

    // A group outside its prefixes (`order-query`, `it_`, `bench-`).
    let outsider = consumer_as(&kafka, KafkaUser::Query, "not-a-query-group");
    assert_eq!(
        first_error(&outsider).await,
        Some(RDKafkaErrorCode::GroupAuthorizationFailed)
    );
}

#[tokio::test]
async fn the_relay_user_can_neither_read_the_topic_nor_create_one() {
    let kafka = fresh_topic("acl_r_read").await;
    assert_eq!(produce_as(&kafka, KafkaUser::Relay, true).await, Ok(()));

    // In a group: no group is the relay user's.
    let grouped = consumer_as(&kafka, KafkaUser::Relay, &support::unique("acl_relay"));
    assert_eq!(
        first_error(&grouped).await,
        Some(RDKafkaErrorCode::GroupAuthorizationFailed)
    );
    // Fetching by assign(), which needs no group: no READ on the topic.
    let reader: StreamConsumer = kafka::base_config(&support::kafka_as(&kafka, KafkaUser::Relay))
        .unwrap()
        .set("group.id", support::unique("acl_relay"))
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in 0..kafka.topic_partitions {
        partitions
            .add_partition_offset(&kafka.topic, partition, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&partitions).unwrap();
    reports(&reader, RDKafkaErrorCode::TopicAuthorizationFailed).await;

    let missing = support::kafka_as(&support::fresh_kafka("acl_r_create"), KafkaUser::Relay);
    let started = Instant::now();
    let refused = kafka::ensure_topic(&missing)
        .await
        .expect_err("the relay user may not create topics");
    assert!(
        matches!(
            refused,
            KafkaError::AdminOp(RDKafkaErrorCode::TopicAuthorizationFailed)
        ),
        "{refused:?}"
    );
    assert!(started.elapsed() < ANSWERED);
    // It may check that an existing topic is there, which is all the relay does.
    assert_eq!(
        kafka::ensure_topic(&support::kafka_as(&kafka, KafkaUser::Relay))
            .await
            .expect("the relay user describes its topic"),
        TopicStatus::Existed
    );
}

#[tokio::test]
async fn the_admin_user_creates_topics_and_the_query_user_does_not() {
    let admin = support::fresh_kafka("acl_a_create");
    assert_eq!(
        kafka::ensure_topic(&admin)
            .await
            .expect("the admin user creates it"),
        TopicStatus::Created
    );
    assert_eq!(
        kafka::ensure_topic(&admin)
            .await
            .expect("and finds it again"),
        TopicStatus::Existed
    );
    assert_eq!(
        kafka::ensure_topic(&support::kafka_as(&admin, KafkaUser::Query))
            .await
            .expect("the query user describes it"),
        TopicStatus::Existed
    );

    let missing = support::kafka_as(&support::fresh_kafka("acl_q_create"), KafkaUser::Query);
    let refused = kafka::ensure_topic(&missing)
        .await
        .expect_err("the query user may not create topics");
    assert!(
        matches!(
            refused,
            KafkaError::AdminOp(RDKafkaErrorCode::TopicAuthorizationFailed)
        ),
        "{refused:?}"
    );
}
