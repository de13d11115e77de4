#!/usr/bin/env bash
# Builds the pinned kube-apiserver, etcd and helm binaries from the Go module proxy into a
# cache folder keyed by the hash of the pins, and prints that bin folder on stdout.
# Rebuilds only when go.mod/go.sum or this script change. Nothing is installed system-wide.
#
#   KUBEENV_CACHE  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/pause-ledger/kubeenv);
#                  outside the clone on purpose so fresh clones (CI) reuse a warm build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${KUBEENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pause-ledger/kubeenv}"
# Bump when the build commands below change; the pins themselves are hashed.
build_rev=1
key="$( (echo "$build_rev"; cat "$here"/*/go.mod "$here"/*/go.sum) | sha256sum | cut -c1-16)"
bin="$root/$key/bin"
if [[ -x "$bin/kube-apiserver" && -x "$bin/etcd" && -x "$bin/helm" ]]; then
  echo "$bin"; exit 0
fi
mkdir -p "$root"
# Serialize concurrent callers (parallel test binaries, a demo next to a test run).
exec 9>"$root/.lock"
flock 9
if [[ -x "$bin/kube-apiserver" && -x "$bin/etcd" && -x "$bin/helm" ]]; then
  echo "$bin"; exit 0
fi
# Go lives outside PATH on some images (non-login shells, CI): look in the usual places.
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:/usr/lib/go/bin"
command -v go >/dev/null || { echo "kubeenv: 'go' not found on PATH or in /usr/local/go/bin" >&2; exit 1; }
mkdir -p "$root/$key"
tmp="$(mktemp -d "$root/$key/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath" GOTOOLCHAIN=local
k8s_ver="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/apiserver/go.mod")"
helm_ver="$(awk '$1=="require" && $2=="helm.sh/helm/v3" {print $3}' "$here/helm/go.mod")"
major="${k8s_ver#v}"; major="${major%%.*}"; minor="${k8s_ver#v*.}"; minor="${minor%%.*}"
build() { # module-dir package output ldflags...
  local dir="$1" pkg="$2" out="$3"; shift 3
  echo "kubeenv: building $out ($pkg)" >&2
  local start=$SECONDS
  (cd "$here/$dir" && go build -o "$tmp/$out" -ldflags "-s -w $*" "$pkg")
  echo "kubeenv: built $out in $((SECONDS - start))s" >&2
}
build apiserver k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver \
  "-X k8s.io/component-base/version.gitVersion=$k8s_ver" \
  "-X k8s.io/component-base/version.gitMajor=$major" \
  "-X k8s.io/component-base/version.gitMinor=$minor" \
  "-X k8s.io/component-base/version.gitTreeState=clean"
build etcd go.etcd.io/etcd/server/v3 etcd
build helm helm.sh/helm/v3/cmd/helm helm \
  "-X helm.sh/helm/v3/internal/version.version=$helm_ver" \
  "-X helm.sh/helm/v3/internal/version.gitTreeState=clean"
mkdir -p "$bin.new" && mv "$tmp"/kube-apiserver "$tmp"/etcd "$tmp"/helm "$bin.new"/
rm -rf "$bin" && mv "$bin.new" "$bin"
echo "$bin"
