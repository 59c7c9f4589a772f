#!/usr/bin/env bash
# Builds the Kubernetes test bed's binaries (kube-apiserver, kube-controller-manager,
# kubectl) from the Go module k8s.io/kubernetes at one pinned release, and caches them
# under ~/.cache/trellis/kubernetes/<version>/, so only a fresh machine builds (several
# minutes on two cores). Prints the cache directory. Safe to run again.
#
# k8s.io/kubernetes replaces its own k8s.io/* modules with ./staging, which a module
# that requires it cannot see; the wrapper module below pins each of them to the
# published v0.N.x of the same release instead.
set -euo pipefail

version=${TRELLIS_KUBERNETES_VERSION:-v1.36.3}
staging=v0${version#v1}
cache=${TRELLIS_KUBERNETES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trellis/kubernetes/$version}
binaries=(kube-apiserver kube-controller-manager kubectl)

have_all() {
  for b in "${binaries[@]}"; do [ -x "$cache/$b" ] || return 1; done
}
if have_all; then
  echo "$cache"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go is needed to build the Kubernetes test bed" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

echo "building Kubernetes $version test bed into $cache (several minutes)" >&2
go mod init trellis.dev/kubernetes-testbed >/dev/null 2>&1
go mod download -json "k8s.io/kubernetes@$version" >/dev/null
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
{
  echo "require k8s.io/kubernetes $version"
  echo "replace ("
  grep -E '=> \./staging/' "$gomod" | awk -v v="$staging" '{ print "\t" $1 " => " $1 " " v }'
  echo ")"
} >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy >&2
mkdir -p "$cache.partial"
for b in "${binaries[@]}"; do
  go build -trimpath -ldflags=-s -o "$cache.partial/$b" "k8s.io/kubernetes/cmd/$b" >&2
done
rm -rf "$cache"
mv "$cache.partial" "$cache"
echo "$cache"
