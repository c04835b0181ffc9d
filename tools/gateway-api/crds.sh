#!/usr/bin/env bash
# Prints the directory of the Gateway API's standard CRDs, from the module version pinned in
# tools/gateway-api/go.mod (downloaded from the Go module proxy when missing; sums in go.sum).
set -euo pipefail
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
cd "$(dirname "$0")"
go mod download sigs.k8s.io/gateway-api   # the module's files, checked against go.sum
dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)
[[ -d $dir/config/crd/standard ]] || { echo "crds.sh: no config/crd/standard in $dir" >&2; exit 2; }
echo "$dir/config/crd/standard"
