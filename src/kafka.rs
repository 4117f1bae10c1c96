//! Kafka client configuration shared by the relay, the projector and the CLI
//! (brokers, security protocol and SASL credentials), and the events topic:
//! making sure it exists.

use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
    producer::FutureProducer,
    types::RDKafkaConfRes,
};

use crate::config::{KAFKA_PASSWORD_ENV, KafkaSettings, Secret};

/// How long the topic's metadata request and creation may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(10);

/// Client configuration common to every Kafka client of the service: the
/// brokers, and the security protocol and SASL credentials of `settings`.
/// Fails when the credentials are incomplete, contradictory or unreadable;
/// the error names the setting or file, never the password.
pub fn base_config(settings: &KafkaSettings) -> Result<ClientConfig, KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", "orders")
        .set("socket.keepalive.enable", "true")
        .set("security.protocol", settings.security_protocol.as_str());
    if settings.security_protocol.uses_sasl() {
        let (username, password) = sasl_credentials(settings)?;
        config
            .set("sasl.mechanism", settings.sasl_mechanism.as_str())
            .set("sasl.username", username)
            .set("sasl.password", password.expose());
        if let Some(ca) = &settings.ssl_ca_file {
            config.set("ssl.ca.location", ca.display().to_string());
        }
    } else if settings.username.is_some()
        || settings.password_file.is_some()
        || settings.password.is_some()
    {
        return Err(config_error(
            "security.protocol",
            "Kafka credentials are set but ORDERS_KAFKA_SECURITY_PROTOCOL is plaintext \
             (set sasl_plaintext or sasl_ssl)"
                .into(),
        ));
    }
    Ok(config)
}

/// The username and the password (from its file or the environment).
fn sasl_credentials(settings: &KafkaSettings) -> Result<(&str, Secret), KafkaError> {
    let protocol = settings.security_protocol.as_str();
    let username = settings
        .username
        .as_deref()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            config_error(
                "sasl.username",
                format!("security protocol {protocol} needs a username (ORDERS_KAFKA_USERNAME)"),
            )
        })?;
    let password = match (&settings.password_file, &settings.password) {
        (Some(_), Some(_)) => {
            return Err(config_error(
                "sasl.password",
                format!("set either ORDERS_KAFKA_PASSWORD_FILE or {KAFKA_PASSWORD_ENV}, not both"),
            ));
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                config_error(
                    "sasl.password",
                    format!(
                        "cannot read the Kafka password file {}: {error}",
                        path.display()
                    ),
                )
            })?;
            let password = text.lines().next().unwrap_or_default();
            if password.is_empty() {
                return Err(config_error(
                    "sasl.password",
                    format!("the Kafka password file {} is empty", path.display()),
                ));
            }
            Secret::new(password)
        }
        (None, Some(password)) => password.clone(),
        (None, None) => {
            return Err(config_error(
                "sasl.password",
                format!(
                    "security protocol {protocol} needs a password \
                     (ORDERS_KAFKA_PASSWORD_FILE, or {KAFKA_PASSWORD_ENV})"
                ),
            ));
        }
    };
    Ok((username, password))
}

fn config_error(key: &str, description: String) -> KafkaError {
    KafkaError::ClientConfig(
        RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
        description,
        key.into(),
        String::new(),
    )
}

/// An idempotent producer (`enable.idempotence=true`, `acks=all`): retries never
/// duplicate or reorder within a partition.
pub fn idempotent_producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    base_config(settings)?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        // A message not acknowledged within 15 s fails, and the relay
        // publishes it again from the outbox; see `command::relay` for why it
        // may then need a new producer.
        .set("message.timeout.ms", "15000")
        .set("request.timeout.ms", "10000")
        .set("compression.type", "none")
        .create()
}

/// What [`ensure_topic`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicStatus {
    /// The topic was there already.
    Existed,
    /// This call created it.
    Created,
}

/// Makes sure `settings.topic` exists. A metadata request first, which any
/// principal that may describe the topic can send; only when the topic is
/// missing, a CreateTopics (infinite retention), which needs CREATE. On a
/// secured broker the servers' principals have no CREATE: the admin
/// principal creates the topic (`orderctl create-topic`) before they start,
/// and a server that finds it missing logs that and fails.
pub async fn ensure_topic(settings: &KafkaSettings) -> Result<TopicStatus, KafkaError> {
    if topic_exists(settings).await? {
        return Ok(TopicStatus::Existed);
    }
    let admin: AdminClient<DefaultClientContext> = base_config(settings)?.create()?;
    let topic = NewTopic::new(
        &settings.topic,
        settings.topic_partitions,
        TopicReplication::Fixed(1),
    )
    .set("retention.ms", "-1");
    let options = AdminOptions::new().operation_timeout(Some(TOPIC_TIMEOUT));
    let mut status = TopicStatus::Existed;
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) => status = TopicStatus::Created,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((
                name,
                code @ (RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed),
            )) => {
                tracing::error!(
                    topic = %name,
                    user = settings.username.as_deref().unwrap_or("(none)"),
                    ?code,
                    "the topic does not exist and this Kafka user may not create it: \
                     create it as the admin principal (orderctl create-topic)"
                );
                return Err(KafkaError::AdminOp(code));
            }
            Err((name, code)) => {
                tracing::warn!(topic = %name, ?code, "topic creation failed");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(status)
}

/// Whether the broker knows `settings.topic` (a metadata request).
async fn topic_exists(settings: &KafkaSettings) -> Result<bool, KafkaError> {
    let client: BaseConsumer = base_config(settings)?.create()?;
    let topic = settings.topic.clone();
    let user = settings.username.clone();
    tokio::task::spawn_blocking(move || {
        let metadata = client.fetch_metadata(Some(&topic), TOPIC_TIMEOUT)?;
        let error = match metadata.topics().iter().find(|t| t.name() == topic) {
            None => return Ok(false),
            Some(found) => found.error().map(RDKafkaErrorCode::from),
        };
        match error {
            None | Some(RDKafkaErrorCode::LeaderNotAvailable) => Ok(true),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(false),
            Some(code) => {
                if code == RDKafkaErrorCode::TopicAuthorizationFailed {
                    tracing::error!(
                        %topic,
                        user = user.as_deref().unwrap_or("(none)"),
                        "this Kafka user may not describe the topic (no ACL for it)"
                    );
                }
                Err(KafkaError::MetadataFetch(code))
            }
        }
    })
    .await
    .expect("the metadata request does not panic")
}

/// A consumer for reading whole partitions fast with `assign()`: large
/// fetches, a deep local queue, and an end-of-partition event so the reader
/// knows when it has everything. `group` is only its name (librdkafka wants
/// one for `assign()`): it never joins the group and never commits offsets.
pub fn partition_reader(settings: &KafkaSettings, group: &str) -> Result<BaseConsumer, KafkaError> {
    base_config(settings)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", "67108864")
        .set("max.partition.fetch.bytes", "16777216")
        .set("queued.min.messages", "200000")
        .set("queued.max.messages.kbytes", "262144")
        .create()
}

/// The low and high watermarks of every partition of `topic`, each request
/// bounded by `timeout`; empty when the broker knows no such topic. Blocks:
/// call it off the async runtime.
pub fn watermarks(
    client: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|p| Ok((p, client.fetch_watermarks(topic, p, timeout)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{KafkaSaslMechanism, KafkaSecurityProtocol};

    fn password_file(contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("orders-kafka-pw-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn sasl(username: Option<&str>) -> KafkaSettings {
        let mut settings = KafkaSettings::new("127.0.0.1:9092", "orders.events.v1");
        settings.security_protocol = KafkaSecurityProtocol::SaslPlaintext;
        settings.username = username.map(str::to_owned);
        settings
    }

    fn error_text(settings: &KafkaSettings) -> String {
        base_config(settings).expect_err("refused").to_string()
    }

    #[test]
    fn plaintext_sets_no_credentials() {
        let config = base_config(&KafkaSettings::new("127.0.0.1:9092", "t")).unwrap();
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.username"), None);
    }

    #[test]
    fn sasl_takes_the_first_line_of_the_password_file() {
        let mut settings = sasl(Some("orders-relay"));
        settings.password_file = Some(password_file("s3cret-pw\n"));
        settings.sasl_mechanism = KafkaSaslMechanism::ScramSha512;
        let config = base_config(&settings).unwrap();
        assert_eq!(config.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("orders-relay"));
        assert_eq!(config.get("sasl.password"), Some("s3cret-pw"));
        assert!(!format!("{config:?}").contains("s3cret-pw"), "{config:?}");
    }

    #[test]
    fn sasl_takes_the_password_from_the_environment_value() {
        let mut settings = sasl(Some("orders-query"));
        settings.password = Some(Secret::new("from-env"));
        settings.security_protocol = KafkaSecurityProtocol::SaslSsl;
        settings.ssl_ca_file = Some("/etc/ssl/ca.pem".into());
        let config = base_config(&settings).unwrap();
        assert_eq!(config.get("sasl.password"), Some("from-env"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/ssl/ca.pem"));
    }

    #[test]
    fn incomplete_or_contradictory_credentials_are_refused_without_showing_the_password() {
        let mut no_user = sasl(None);
        no_user.password = Some(Secret::new("hunter2"));
        let text = error_text(&no_user);
        assert!(text.contains("ORDERS_KAFKA_USERNAME"), "{text}");

        let no_password = sasl(Some("orders-relay"));
        assert!(error_text(&no_password).contains("ORDERS_KAFKA_PASSWORD_FILE"));

        let mut both = sasl(Some("orders-relay"));
        both.password = Some(Secret::new("hunter2"));
        both.password_file = Some(password_file("hunter2\n"));
        let text = error_text(&both);
        assert!(
            text.contains("not both") && !text.contains("hunter2"),
            "{text}"
        );

        let mut missing = sasl(Some("orders-relay"));
        missing.password_file = Some("/nonexistent/orders-relay".into());
        let text = error_text(&missing);
        assert!(text.contains("/nonexistent/orders-relay"), "{text}");

        let mut empty = sasl(Some("orders-relay"));
        empty.password_file = Some(password_file("\n"));
        assert!(error_text(&empty).contains("is empty"));

        let mut plaintext = KafkaSettings::new("127.0.0.1:9092", "t");
        plaintext.username = Some("orders-relay".into());
        plaintext.password = Some(Secret::new("hunter2"));
        let text = error_text(&plaintext);
        assert!(
            text.contains("plaintext") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn the_built_librdkafka_offers_scram() {
        let (_, version) = rdkafka::util::get_rdkafka_version();
        let client: BaseConsumer = ClientConfig::new()
            .set("security.protocol", "sasl_plaintext")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", "u")
            .set("sasl.password", "p")
            .create()
            .unwrap_or_else(|e| panic!("librdkafka {version} refuses SCRAM: {e}"));
        drop(client);
    }
}
