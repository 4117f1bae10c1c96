#!/usr/bin/env bash
# Generates the Go stubs for every proto/orders/v1/*.proto into
# internal/ordersv1 (git-ignored). Run through `go generate ./...` from
# clients/go, or directly. Needs on PATH: protoc (3.21+) with its well-known
# types (Debian: protobuf-compiler and libprotobuf-dev, which scripts/clients
# installs), protoc-gen-go and protoc-gen-go-grpc (scripts/clients installs the
# pinned ones into ${ORDERS_CACHE_DIR:-$HOME/.cache/orders}/bin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
proto_root="$(cd "$here/../.." && pwd -P)/proto"
module=example.com/orders/clients/go
pkg=$module/internal/ordersv1

# The .proto files carry no go_package option (the contract is language
# neutral), so map each file to the Go package here.
files=() go_opts=() grpc_opts=()
for f in "$proto_root"/orders/v1/*.proto; do
  rel=${f#"$proto_root"/}
  files+=("$rel")
  go_opts+=("--go_opt=M$rel=$pkg")
  grpc_opts+=("--go-grpc_opt=M$rel=$pkg")
done
((${#files[@]})) || { echo "no .proto files under $proto_root/orders/v1" >&2; exit 1; }

rm -rf "$here/internal/ordersv1"
mkdir -p "$here/internal/ordersv1"
cd "$proto_root"
protoc -I . \
  --go_out="$here" --go_opt=module=$module "${go_opts[@]}" \
  --go-grpc_out="$here" --go-grpc_opt=module=$module "${grpc_opts[@]}" \
  "${files[@]}"
