#!/usr/bin/env bash
# Builds Helm from its Go module (tools/helm/go.mod: the version pinned there, sums in go.sum)
# into a cache outside the repository, keyed by version, to check that deploy/helm/podnet renders
# what deploy/*.yaml holds. Debian has no helm package. Does nothing when it is there. Prints the
# binary's path on its last line.
#
#   tools/helm/build.sh        # builds when missing, prints e.g. /var/cache/podnet/helm/v4.3.2/bin/helm
set -euo pipefail
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "helm.sh/helm/v4" {print $2; exit}' "$here/go.mod")
[[ -n $version ]] || { echo "build.sh: cannot read helm's version from go.mod" >&2; exit 2; }
bin="${PODNET_HELM_CACHE:-/var/cache/podnet/helm}/$version/bin"
if [[ ! -x $bin/helm ]]; then
    mkdir -p "$bin"
    # A build cache of its own, removed afterwards (as tools/k8s/build.sh does).
    GOCACHE=$(mktemp -d /var/tmp/podnet-helm-gocache.XXXXXX)
    export GOCACHE
    trap 'rm -rf "$GOCACHE"' EXIT
    start=$SECONDS
    (cd "$here" && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" -o "$bin/helm.tmp" helm.sh/helm/v4/cmd/helm)
    mv "$bin/helm.tmp" "$bin/helm"
    echo "built helm $version in $((SECONDS - start)) s; $(du -sh "$bin/helm" | cut -f1)" >&2
fi
echo "$bin/helm"
