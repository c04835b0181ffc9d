#!/usr/bin/env bash
# Builds upstream's kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd
# from their Go modules (tools/k8s/go.mod, tools/etcd/go.mod: versions pinned there, sums in
# go.sum) into a cache outside the repository, keyed by version. Does nothing when they are
# there. Prints the directory of the binaries on its last line.
#
#   tools/k8s/build.sh            # builds when missing, prints e.g. /var/cache/podnet/k8s/v1.37.2-etcd-v3.6.16/bin
#   PODNET_K8S_CACHE=DIR tools/k8s/build.sh
set -euo pipefail
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

here=$(cd "$(dirname "$0")" && pwd)
# The version a go.mod requires of a module (`require M V` or a line of a require block).
required() { awk -v m="$1" '$1 == "require" && $2 == m {print $3; exit} $1 == m && $2 ~ /^v/ {print $2; exit}' "$2"; }
k8s_version=$(required k8s.io/kubernetes "$here/go.mod")
etcd_version=$(required go.etcd.io/etcd/server/v3 "$here/../etcd/go.mod")
[[ -n $k8s_version && -n $etcd_version ]] || { echo "build.sh: cannot read the pinned versions from go.mod" >&2; exit 2; }
bin="${PODNET_K8S_CACHE:-/var/cache/podnet/k8s}/$k8s_version-etcd-$etcd_version/bin"
programs=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

missing=()
for p in "${programs[@]}"; do [[ -x $bin/$p ]] || missing+=("$p"); done
if ((${#missing[@]} == 0)); then
    echo "$bin"
    exit 0
fi

mkdir -p "$bin"
# A build cache of its own, removed afterwards: upstream's packages fill ~5 GB of it, which a
# machine that builds these once (CI) has no use for and may not have the disk for.
GOCACHE=$(mktemp -d /var/tmp/podnet-k8s-gocache.XXXXXX)
export GOCACHE
trap 'rm -rf "$GOCACHE"' EXIT
minor=${k8s_version#v1.}
minor=${minor%%.*}
# What `kubectl version` and the apiserver's /version say (hack/lib/version.sh's variables).
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

start=$SECONDS
for p in "${missing[@]}"; do
    t=$SECONDS
    if [[ $p == etcd ]]; then
        (cd "$here/../etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .)
    else
        (cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$bin/$p.tmp" "k8s.io/kubernetes/cmd/$p")
    fi
    mv "$bin/$p.tmp" "$bin/$p"
    echo "built $p in $((SECONDS - t)) s" >&2
done
echo "built ${missing[*]} in $((SECONDS - start)) s; cache: $(du -sh "$bin" | cut -f1) in $bin" >&2
echo "$bin"
