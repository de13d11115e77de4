#!/usr/bin/env bash
# Builds the pinned chart tools from the Go module proxy into a cache folder keyed by the hash
# of the pins, and prints that bin folder on stdout:
#   <bin>/helm-docs                       README values table from values.yaml comments
#   <bin>/untt                            helm-unittest, runnable directly: untt CHART
#   <bin>/helm-plugins/unittest/          the same binary as a Helm plugin:
#                                         HELM_PLUGINS=<bin>/helm-plugins helm unittest CHART
# A folder of its own (not tools/kubeenv/, whose build script hashes every sub-folder there):
# changing these pins never rebuilds kube-apiserver. Rebuilds only when go.mod/go.sum or this
# script change. Nothing is installed system-wide, nothing is downloaded but Go modules.
#
#   CHART_TOOLS_CACHE  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/pause-ledger/chart-tools)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${CHART_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pause-ledger/chart-tools}"
key="$( (cat "$here/build.sh" "$here"/*/go.mod "$here"/*/go.sum) | sha256sum | cut -c1-16)"
bin="$root/$key/bin"
ready() { [[ -x "$bin/helm-docs" && -x "$bin/untt" && -f "$bin/helm-plugins/unittest/plugin.yaml" ]]; }
if ready; then echo "$bin"; exit 0; fi
mkdir -p "$root"
# Serialize concurrent callers (parallel test binaries, tools/test next to a cargo test).
exec 9>"$root/.lock"
flock 9
if ready; then echo "$bin"; exit 0; fi
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:/usr/lib/go/bin"
command -v go >/dev/null || { echo "chart-tools: 'go' not found on PATH or in /usr/local/go/bin" >&2; exit 1; }
mkdir -p "$root/$key"
tmp="$(mktemp -d "$root/$key/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath" GOTOOLCHAIN=local
version_of() { awk -v m="$2" '$1=="require" && $2==m {print $3}' "$here/$1/go.mod"; }
docs_ver="$(version_of helm-docs github.com/norwoodj/helm-docs)"
untt_ver="$(version_of helm-unittest github.com/helm-unittest/helm-unittest)"
build() { # module-dir package output ldflags...
  local dir="$1" pkg="$2" out="$3"; shift 3
  echo "chart-tools: building $out ($pkg)" >&2
  local start=$SECONDS
  (cd "$here/$dir" && go build -o "$tmp/$out" -ldflags "-s -w $*" "$pkg")
  echo "chart-tools: built $out in $((SECONDS - start))s" >&2
}
build helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs helm-docs "-X main.version=${docs_ver#v}"
build helm-unittest github.com/helm-unittest/helm-unittest/cmd/helm-unittest untt \
  "-X github.com/helm-unittest/helm-unittest/internal/build.version=${untt_ver#v}"
# The plugin as `helm plugin install` would lay it out, minus upstream's install hook (it
# downloads a release binary from GitHub): a plugin.yaml whose command is the binary we built.
mkdir -p "$tmp/helm-plugins/unittest"
cp "$tmp/untt" "$tmp/helm-plugins/unittest/untt"
cat >"$tmp/helm-plugins/unittest/plugin.yaml" <<YAML
name: unittest
version: "${untt_ver#v}"
usage: unittest for helm charts
description: helm-unittest ${untt_ver}, built from the Go module proxy by tools/chart-tools/build.sh
ignoreFlags: false
command: "\$HELM_PLUGIN_DIR/untt"
YAML
mkdir -p "$bin.new" && mv "$tmp"/helm-docs "$tmp"/untt "$tmp"/helm-plugins "$bin.new"/
rm -rf "$bin" && mv "$bin.new" "$bin"
echo "$bin"
