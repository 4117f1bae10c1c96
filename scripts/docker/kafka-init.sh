#!/usr/bin/env bash
# One-shot service of docker-compose.yml, once the broker is healthy: grants
# the ACLs of scripts/dev's KAFKA_ACLS (keep the two the same; see
# ARCHITECTURE.md, "Kafka principals") and creates orders.events.v1, as the
# broker's own super user. Idempotent.
set -euo pipefail
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
BOOTSTRAP=kafka:19092
TOPIC_PREFIXES=(--topic orders. --topic it. --topic bench.)
GROUP_PREFIXES=(--group order-query --group order-fulfilment --group it_ --group bench-)

[[ -s /orders/credentials/admin ]] || { echo "kafka-init: no admin password in /orders/credentials: run scripts/dev kafka-credentials" >&2; exit 1; }
umask 077
props=$(mktemp)
trap 'rm -f "$props"' EXIT
# The broker's own user's client properties, from its password file.
printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=SCRAM-SHA-512" \
  "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$(sed -n 1p /orders/credentials/admin)\";" \
  >"$props"

acl() { # user operations-and-resources...
  "$KAFKA_HOME/bin/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$props" \
    --add --allow-principal "User:$1" --resource-pattern-type prefixed "${@:2}" >/dev/null
}
acl orders-relay --operation Write --operation Describe "${TOPIC_PREFIXES[@]}"
acl orders-query --operation Read --operation Describe "${TOPIC_PREFIXES[@]}" "${GROUP_PREFIXES[@]}"
acl orders-admin --operation Create --operation Describe --operation DescribeConfigs --operation Read "${TOPIC_PREFIXES[@]}"
acl orders-admin --operation Read --operation Describe --operation Delete "${GROUP_PREFIXES[@]}"
"$KAFKA_HOME/bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$props" --create --if-not-exists \
  --topic orders.events.v1 --partitions 3 --replication-factor 1 --config retention.ms=-1
echo "kafka-init: ACLs granted, orders.events.v1 exists"
