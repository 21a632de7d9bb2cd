#!/usr/bin/env bash
# Builds the tests' control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) from the Go module in go/ into a cache outside the work tree, and prints its bin folder.
#
#   tests/cluster/build.sh                 build if the cache lacks this version, print the bin folder
#   tests/cluster/build.sh --print-bin-dir print the bin folder (built or not) and exit
#
# The cache folder is keyed by the versions and the module's files:
#   ${LLAMACONTROLLER_CACHE:-$HOME/.cache/llamacontroller}/control-plane/
#       <kubernetes>-<etcd>-<go version>-<12 hex of sha256(go.mod, go.sum, cmd/etcd/main.go)>/bin
# so a second call finds it and returns at once. Go's own caches (GOCACHE, GOMODCACHE) stay where
# the machine keeps them. A lock makes concurrent calls build once.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
module="$here/go"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if [[ ! -x "$GO" ]]; then
  echo "build.sh: no Go toolchain (looked for 'go' on PATH and /usr/local/go/bin/go; set GO=...)" >&2
  exit 2
fi
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0

cd "$module"
module_version() { sed -nE "s#^[[:space:]]*(require[[:space:]]+)?$1[[:space:]]+(v[^[:space:]]+).*#\2#p" go.mod | head -1; }
k8s_version="$(module_version 'k8s\.io/kubernetes')"
etcd_version="$(module_version 'go\.etcd\.io/etcd/server/v3')"
go_version="$("$GO" env GOVERSION)"
digest="$(cat go.mod go.sum cmd/etcd/main.go | sha256sum | cut -c1-12)"
root="${LLAMACONTROLLER_CACHE:-$HOME/.cache/llamacontroller}/control-plane"
dir="$root/${k8s_version}-${etcd_version}-${go_version}-${digest}"
programs=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$dir/bin"
  exit 0
fi

complete() { [[ -f "$dir/bin/.complete" ]]; }
if complete; then
  echo "$dir/bin"
  exit 0
fi

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if complete; then
  echo "$dir/bin"
  exit 0
fi

# The version fields that Kubernetes' own build sets (hack/lib/version.sh): without them the
# programs report v0.0.0 and kubectl warns about version skew.
k8s_minor="${k8s_version#v*.}"
k8s_minor="${k8s_minor%%.*}"
build_date="$("$GO" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit="
done

staging="$(mktemp -d "$root/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "build.sh: building ${programs[*]} ($k8s_version, etcd $etcd_version, $go_version) into $dir" >&2
start=$SECONDS
"$GO" build -trimpath -tags=notest -ldflags="$ldflags" -o "$staging/bin/" \
  ./cmd/etcd \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl
for program in "${programs[@]}"; do
  [[ -x "$staging/bin/$program" ]] || { echo "build.sh: $program was not built" >&2; exit 1; }
done
echo "$k8s_version $etcd_version $go_version built in $((SECONDS - start)) s" >"$staging/bin/.complete"
rm -rf "$dir"
mv "$staging" "$dir"
trap - EXIT
echo "build.sh: built in $((SECONDS - start)) s" >&2
echo "$dir/bin"
