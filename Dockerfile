# One image with both servers (and orderctl); docker-compose.yml picks the
# binary with `command:`.
#   docker build -t orders:dev .
#   docker run --rm orders:dev order-query   # needs Kafka + PostgreSQL, see compose

FROM rust:1.95-bookworm AS build
# gcc/make for the bundled librdkafka are in the image; pkg-config for the -sys
# crates, libssl-dev for librdkafka's SASL/SCRAM (rdkafka's `ssl` feature).
# No protoc: build.rs compiles proto/ with the pure-Rust protox.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .git is not in the context: orders_build_info{git_sha} comes from here
# (docker build --build-arg ORDERS_GIT_SHA=$(git rev-parse --short=12 HEAD)).
ARG ORDERS_GIT_SHA=unknown
ENV ORDERS_GIT_SHA=$ORDERS_GIT_SHA
RUN cargo build --release --locked --bins \
 && mkdir -p /out \
 && find target/release -maxdepth 1 -type f -executable -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home orders
COPY --from=build /out/ /usr/local/bin/
USER orders
EXPOSE 50051 50052 50053 50054 50055
CMD ["order-command"]
