#!/usr/bin/env bash
# Builds the test control plane from the Go modules pinned in this folder's go.mod:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.
# Output: ${INFERSHIFT_REALENGINE_DIR:-$HOME/.cache/infershift/realengine}/k8s-<hash>/bin, where
# <hash> is that of go.mod and go.sum, so a pin change builds anew and an unchanged one is reused.
# Also <hash>/share/kwok-stages.yaml: KWOK's own "fast" stages (node initialize, node heartbeat
# with lease, pod ready / complete / delete) from the pinned kwok module's kustomize/stage folders,
# which `kwok --config` reads (kwokctl embeds the same files, pkg/kwokctl/runtime/cluster.go).
#
#   tools/realengine/k8s/build.sh          prints the bin folder (builds it first when absent)
#   tools/realengine/k8s/build.sh --where  prints the bin folder; exits 1 if it is not built
#
# Used by `make realengine` and tests/realengine (controlplane.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
root="${INFERSHIFT_REALENGINE_DIR:-$HOME/.cache/infershift/realengine}"
hash="$(cat go.mod go.sum | sha256sum | cut -c1-16)"
out="$root/k8s-$hash"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
go="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
stages() { # dest-file: KWOK's default stages from the pinned module (downloaded if needed)
	"$go" mod download sigs.k8s.io/kwok >&2
	local kwok
	kwok="$("$go" list -mod=readonly -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
	local f first=1
	: >"$1.tmp"
	for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
		pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
		[ "$first" = 1 ] || echo "---" >>"$1.tmp"
		first=0
		cat "$kwok/$f" >>"$1.tmp"
	done
	mv "$1.tmp" "$1"
}
have=1
for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || have=0; done
if [ "$have" = 1 ] && [ -s "$out/share/kwok-stages.yaml" ]; then
	[ "${1:-}" = --where ] || echo "control plane: reusing $out/bin" >&2
	echo "$out/bin"
	exit 0
fi
if [ "${1:-}" = --where ]; then
	echo "$out/bin"
	exit 1
fi
if [ "$have" = 1 ]; then # binaries of these pins, stages missing (an older build.sh): add them
	mkdir -p "$out/share"
	stages "$out/share/kwok-stages.yaml"
	echo "$out/bin"
	exit 0
fi
k8s_version="$(awk '$1 == "k8s.io/kubernetes" {print $2}' go.mod)"
# The version the binaries report (/version); an official build stamps it the same way.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=$(echo "${k8s_version#v}" | cut -d. -f1)"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "${k8s_version#v}" | cut -d. -f2)"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
build() { # output-name package
	echo "control plane: building $1 ($2)" >&2
	nice -n 10 "$go" build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp/bin/$1" "$2" >&2
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kwok sigs.k8s.io/kwok/cmd/kwok
mkdir -p "$tmp/share"
stages "$tmp/share/kwok-stages.yaml"
echo "control plane: built in $(( $(date +%s) - start )) s" >&2
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out/bin"
