#!/usr/bin/env bash
# Entrypoint of docker-compose.yml's kafka service: the single-node KRaft
# broker of scripts/dev, with the same SASL/SCRAM-SHA-512 users. Their
# passwords are the files `scripts/dev kafka-credentials` writes, mounted
# read-only at /orders/credentials; they reach the storage format through an
# argument file, never a command line. kafka-init.sh grants the ACLs.
set -euo pipefail
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
CREDENTIALS=/orders/credentials
STATE=/var/lib/kafka
DATA=$STATE/data
CONF=$STATE/server.properties
USERS=(admin orders-admin orders-relay orders-query)

password() { sed -n 1p "$CREDENTIALS/$1"; }
for user in "${USERS[@]}"; do
  [[ -s "$CREDENTIALS/$user" ]] || { echo "kafka-start: no password for $user in $CREDENTIALS: run scripts/dev kafka-credentials" >&2; exit 1; }
done

umask 077
mkdir -p "$DATA"
admin=$(password admin)
# As scripts/kafka/server.properties.template, with two client listeners:
# HOST (9092, published on the host's 127.0.0.1) and INTERNAL (19092, for the
# other containers).
cat >"$CONF" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=localhost:9093
listeners=HOST://:9092,INTERNAL://:19092,CONTROLLER://localhost:9093
advertised.listeners=HOST://127.0.0.1:9092,INTERNAL://kafka:19092,CONTROLLER://localhost:9093
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
listener.security.protocol.map=HOST:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
listener.name.host.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.internal.sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.host.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
log.dirs=$DATA
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPERTIES
# The broker's own user, for the healthcheck and kafka-init.sh.
printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=SCRAM-SHA-512" \
  "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin\";" \
  >"$STATE/admin.properties"

if [[ ! -f "$DATA/meta.properties" ]]; then
  args=$STATE/format.args
  : >"$args"
  for user in "${USERS[@]}"; do
    printf -- '--add-scram\nSCRAM-SHA-512=[name=%s,password=%s]\n' "$user" "$(password "$user")" >>"$args"
  done
  "$KAFKA_HOME/bin/kafka-storage.sh" format --standalone -t "$("$KAFKA_HOME/bin/kafka-storage.sh" random-uuid)" -c "$CONF" "@$args"
  rm -f "$args"
fi
exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$CONF"
