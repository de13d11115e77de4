#!/usr/bin/env bash
# Builds the pinned kube-apiserver, etcd and helm binaries from the Go module proxy and prints a
# bin folder holding them. Nothing is installed system-wide.
#
#   tools/kubeenv/build.sh [NAME...]     (default: every NAME)
#
# Each NAME is a pinned Go module in tools/kubeenv/NAME/ (go.mod, go.sum, tools.go):
#   kube-apiserver-1.34  the oldest Kubernetes tested (what Harvester-era clusters run; default)
#   kube-apiserver-1.37  the newest Kubernetes tested
#   etcd
#   helm-3               Helm 3 (default)
#   helm-4               Helm 4
# and is built into $root/NAME-<hash of that module's pins>/NAME, so changing one pin rebuilds
# one binary. The printed folder $root/bin-<hash of all pins>/ links each NAME built so far,
# plus `kube-apiserver` and `helm` to the defaults for scripts that want "the" pinned one.
#
#   KUBEENV_CACHE  cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/pause-ledger/kubeenv);
#                  outside the clone on purpose so fresh clones (CI) reuse a warm build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${KUBEENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pause-ledger/kubeenv}"
all=(kube-apiserver-1.34 kube-apiserver-1.37 etcd helm-3 helm-4)
default_apiserver=kube-apiserver-1.34
default_helm=helm-3
# Bump when the build commands below change; the pins themselves are hashed.
build_rev=2

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${all[@]}")
for name in "${names[@]}"; do
  [[ " ${all[*]} " == *" $name "* ]] || { echo "kubeenv: unknown binary '$name' (known: ${all[*]})" >&2; exit 2; }
done

pins() { cat "$here/$1/go.mod" "$here/$1/go.sum"; }
key_of() { (echo "$build_rev $1"; pins "$1") | sha256sum | cut -c1-16; }
binary_of() { echo "$root/$1-$(key_of "$1")/$1"; }
view="$root/bin-$( (echo "$build_rev"; for n in "${all[@]}"; do key_of "$n"; done) | sha256sum | cut -c1-16)"

# Links NAME (and the default aliases) into the view; cheap, so done on every call.
link() {
  local name="$1"
  mkdir -p "$view"
  symlink "$(binary_of "$name")" "$view/$name"
  [[ "$name" != "$default_apiserver" ]] || symlink "$name" "$view/kube-apiserver"
  [[ "$name" != "$default_helm" ]] || symlink "$name" "$view/helm"
}
# Replaces a link atomically (rename), so concurrent callers never see it missing.
symlink() {
  ln -sfn "$1" "$2.$$" && mv -Tf "$2.$$" "$2"
}

missing=()
for name in "${names[@]}"; do
  [[ -x "$(binary_of "$name")" ]] || missing+=("$name")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  mkdir -p "$root"
  # Serialize concurrent callers (parallel test binaries, a demo next to a test run).
  exec 9>"$root/.lock"
  flock 9
  # Go lives outside PATH on some images (non-login shells, CI): look in the usual places.
  command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:/usr/lib/go/bin"
  command -v go >/dev/null || { echo "kubeenv: 'go' not found on PATH or in /usr/local/go/bin" >&2; exit 1; }
  export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath" GOTOOLCHAIN=local
  # One build per binary, all at once: a cold build spends much of its time fetching modules
  # from the proxy and linking (one core), so running them side by side keeps both cores busy.
  build_one() {
    local name="$1" out dir ver="" pkg major minor hm start tmp
    local -a ldflags=()
    out="$(binary_of "$name")"
    [[ -x "$out" ]] && return 0 # built by another caller while we waited for the lock
    dir="$here/$name"
    # The version a module pins: `require <module> <version>` in its go.mod.
    pinned() { awk -v m="$1" '$1=="require" && $2==m {print $3}' "$dir/go.mod"; }
    case "$name" in
      kube-apiserver-*)
        pkg=k8s.io/kubernetes/cmd/kube-apiserver
        ver="$(pinned k8s.io/kubernetes)"
        major="${ver#v}"; major="${major%%.*}"; minor="${ver#v*.}"; minor="${minor%%.*}"
        ldflags=("-X k8s.io/component-base/version.gitVersion=$ver"
          "-X k8s.io/component-base/version.gitMajor=$major"
          "-X k8s.io/component-base/version.gitMinor=$minor"
          "-X k8s.io/component-base/version.gitTreeState=clean") ;;
      etcd)
        pkg=go.etcd.io/etcd/server/v3 ;;
      helm-*)
        hm="helm.sh/helm/v${name#helm-}"
        pkg="$hm/cmd/helm"
        ver="$(pinned "$hm")"
        ldflags=("-X $hm/internal/version.version=$ver" "-X $hm/internal/version.gitTreeState=clean") ;;
    esac
    [[ "$name" == etcd || -n "$ver" ]] || { echo "kubeenv: no version pinned in $dir/go.mod" >&2; return 1; }
    mkdir -p "$(dirname "$out")"
    tmp="$(mktemp "$out.XXXXXX")"
    echo "kubeenv: building $name ($pkg)" >&2
    start=$SECONDS
    if ! (cd "$dir" && go build -o "$tmp" -ldflags "-s -w ${ldflags[*]}" "$pkg"); then
      rm -f "$tmp"; echo "kubeenv: building $name failed" >&2; return 1
    fi
    mv "$tmp" "$out"
    echo "kubeenv: built $name in $((SECONDS - start))s" >&2
  }
  pids=()
  for name in "${missing[@]}"; do
    build_one "$name" & pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [[ $failed -eq 0 ]] || exit 1
fi
for name in "${names[@]}"; do link "$name"; done
echo "$view"
