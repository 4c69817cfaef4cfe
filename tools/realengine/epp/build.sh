#!/usr/bin/env bash
# The upstream endpoint picker, built from the Go module pinned in this folder's go.mod
# (sigs.k8s.io/gateway-api-inference-extension cmd/epp; go.mod says why that version).
# `python -m bench` runs it as the router `upstream-epp` (bench/routers/upstream_epp.py).
#
#   tools/realengine/epp/build.sh          prints the bin dir (builds it first when absent)
#   tools/realengine/epp/build.sh --where  prints the bin dir; exits 1 if it is not built
#
# Output: ${INFERSHIFT_REALENGINE_DIR:-$HOME/.cache/infershift/realengine}/epp-<hash>/ with
#   bin/epp       sigs.k8s.io/gateway-api-inference-extension/cmd/epp
#   share/crds/   the CRDs of the same module version (config/crd/bases: InferencePool v1,
#                 InferenceObjective and InferenceModelRewrite v1alpha2, ...), the API that binary
#                 watches (../shared/crds has later versions of them)
# <hash> is that of go.mod and go.sum, so a pin change builds anew and an unchanged one is reused.
# The bin dir is the last line of stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${INFERSHIFT_REALENGINE_DIR:-$HOME/.cache/infershift/realengine}
hash=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
out=$root/epp-$hash
if [[ -x $out/bin/epp && -d $out/share/crds ]]; then
    echo "$out/bin"
    exit 0
fi
if [[ ${1:-} == --where ]]; then
    echo "$out/bin"
    exit 1
fi

go=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
module=sigs.k8s.io/gateway-api-inference-extension
version=$(awk -v m="$module" '$1 == m {print $2}' "$here/go.mod")
# The stamps upstream's own image build sets (its Dockerfile's go build -ldflags -X ...).
commit=df9f8909fe06fe2dfd4a6fc0bd0c01a0acabf849
ldflags="-s -w -X $module/version.CommitSHA=$commit -X $module/version.BuildRef=$version"

export GOFLAGS=-mod=readonly
export CGO_ENABLED=0
mkdir -p "$root"
work=$(mktemp -d "$root/.epp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS
cd "$here"
echo "building the upstream endpoint picker ($module/cmd/epp $version) ..." >&2
nice -n 10 "$go" build -trimpath -ldflags "$ldflags" -o "$work/bin/epp" "$module/cmd/epp"
mkdir -p "$work/share/crds"
cp "$("$go" list -m -f '{{.Dir}}' "$module")"/config/crd/bases/*.yaml "$work/share/crds/"
chmod -R u+w "$work/share"
rm -rf "$out"
mkdir -p "$out"
mv "$work/bin" "$work/share" "$out/"
echo "built in $((SECONDS - start)) s: $out/bin" >&2
echo "$out/bin"
