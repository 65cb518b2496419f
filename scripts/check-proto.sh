#!/usr/bin/env bash
# Fails when the destination API's generated Go code is not what `make proto`
# makes from its .proto (someone edited one and not the other).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
go=${GO:-go}
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
proto=destination/destinationpb/destination.proto
protoc --plugin=protoc-gen-go="$($go tool -n protoc-gen-go)" \
  --plugin=protoc-gen-go-grpc="$($go tool -n protoc-gen-go-grpc)" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative "$proto"
for f in destination.pb.go destination_grpc.pb.go; do
  if ! cmp -s "$out/destination/destinationpb/$f" "destination/destinationpb/$f"; then
    echo "destination/destinationpb/$f differs from what its .proto generates: run make proto" >&2
    exit 1
  fi
done
