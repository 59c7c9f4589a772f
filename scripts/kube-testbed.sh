#!/usr/bin/env bash
# Builds the Kubernetes test bed's binaries (kube-apiserver, kube-controller-manager,
# kubectl) from the Go module k8s.io/kubernetes at one pinned release, and caches them
# under ~/.cache/trellis/kubernetes/<version>/, so only a fresh machine builds (several
# minutes on two cores), with the Gateway API's CRDs (experimental channel) from the Go
# module sigs.k8s.io/gateway-api beside them in gateway-api/, and the mesh (GAMMA)
# conformance manifests of the same release from the Go module
# sigs.k8s.io/gateway-api/conformance in gateway-api-conformance/ (tests/gamma.rs runs
# their cases). Prints the cache directory. Safe to run again.
#
# k8s.io/kubernetes replaces its own k8s.io/* modules with ./staging, which a module
# that requires it cannot see; the wrapper module below pins each of them to the
# published v0.N.x of the same release instead.
set -euo pipefail

version=${TRELLIS_KUBERNETES_VERSION:-v1.36.3}
gateway_api=${TRELLIS_GATEWAY_API_VERSION:-v1.6.3}
staging=v0${version#v1}
cache=${TRELLIS_KUBERNETES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trellis/kubernetes/$version}
binaries=(kube-apiserver kube-controller-manager kubectl)

# The conformance manifests have a marker of their own, so a machine that built the
# binaries before they were cached only fetches them (a second or two). Not inside
# gateway-api/: the test bed applies every file there.
conformance=$cache/gateway-api-conformance
if [ ! -f "$conformance/$gateway_api" ]; then
  command -v go >/dev/null || { echo "error: Go is needed to fetch the Gateway API conformance manifests" >&2; exit 1; }
  fetch=$(mktemp -d)
  (
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOMODCACHE="$fetch/modules"
    trap 'go clean -modcache >/dev/null 2>&1; rm -rf "$fetch"' EXIT
    cd "$fetch"
    dir=$(go mod download -json "sigs.k8s.io/gateway-api/conformance@$gateway_api" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    [ -f "$dir/mesh/manifests.yaml" ] || { echo "error: no mesh/manifests.yaml in sigs.k8s.io/gateway-api/conformance@$gateway_api" >&2; exit 1; }
    rm -rf "$conformance"
    mkdir -p "$conformance/mesh" "$conformance/tests/mesh"
    cp "$dir/mesh/manifests.yaml" "$conformance/mesh/"
    cp "$dir"/tests/mesh/*.yaml "$conformance/tests/mesh/"
    chmod -R u+w "$conformance"
    touch "$conformance/$gateway_api"
  )
fi

have_all() {
  for b in "${binaries[@]}"; do [ -x "$cache/$b" ] || return 1; done
  [ -f "$cache/gateway-api/$gateway_api" ]
}
if have_all; then
  echo "$cache"
  exit 0
fi

command -v go >/dev/null || { echo "error: Go is needed to build the Kubernetes test bed" >&2; exit 1; }
work=$(mktemp -d)
# The module and build caches of this build (a few GB) go when it ends: only the
# binaries are kept, and CI machines have little disk to spare.
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOCACHE="$work/build-cache" GOMODCACHE="$work/modules"
trap 'go clean -modcache >/dev/null 2>&1; rm -rf "$work"' EXIT
mkdir "$work/module"
cd "$work/module"

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
# The release the binaries report (`/version`, `kubectl version`), as Kubernetes' own
# build stamps it; without it they say v0.0.0-master.
minor=${version#v1.}
minor=${minor%%.*}
stamp="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1"
stamp="$stamp -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
stamp="$stamp -X k8s.io/client-go/pkg/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitMajor=1"
stamp="$stamp -X k8s.io/client-go/pkg/version.gitMinor=$minor"
mkdir -p "$cache"
for b in "${binaries[@]}"; do
  [ -x "$cache/$b" ] && continue
  go build -trimpath -ldflags="-s $stamp" -o "$cache/$b.partial" "k8s.io/kubernetes/cmd/$b" >&2
  mv "$cache/$b.partial" "$cache/$b"
done
# The cluster owner's CRDs, as a user installs them; not the validating admission
# policy that guards upgrades between channels (the test bed installs one channel).
crds=$(go mod download -json "sigs.k8s.io/gateway-api@$gateway_api" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
mkdir -p "$cache/gateway-api"
cp "$crds"/config/crd/experimental/gateway.networking.*.yaml "$cache/gateway-api/"
chmod u+w "$cache"/gateway-api/*
rm -f "$cache"/gateway-api/*_vap_*.yaml
touch "$cache/gateway-api/$gateway_api"
echo "$cache"
