#!/usr/bin/env bash
# The Pulumi CLI and the pulumi-kubernetes provider, built from the Go modules pinned in cli/go.mod
# and provider/go.mod (tests/realengine runs `pulumi up` with them against a real API server).
# Two modules, because one build list cannot hold both: the provider (v4.25.0) is written against
# pulumi/pkg/v3 v3.215.0's codegen/schema, whose ResourceSpec fields v3.276.0 changed
# (pkg/gen/schema.go: "cannot use pschema.ResourceSpec{…} as *ResourceSpec value").
#
#   tools/realengine/pulumi/build.sh          prints the bin dir (builds it first when absent)
#   tools/realengine/pulumi/build.sh --where  prints the bin dir; exits 1 if it is not built
#
# Output: ${INFERSHIFT_REALENGINE_DIR:-$HOME/.cache/infershift/realengine}/pulumi-<hash>/bin with
#   pulumi                       github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
#   pulumi-resource-kubernetes   github.com/pulumi/pulumi-kubernetes/provider/v4/cmd/pulumi-resource-kubernetes
# <hash> covers both go.mod and go.sum files and this script, so a change of any pin or flag builds anew.
#
# No Python language host: github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 is
# not served by the module proxy these machines reach (403 "This module version is not available"
# for @v/list, v3.276.0 and a commit pseudo-version). tests/realengine/pulumi_engine.py runs the
# program with the Python SDK's own language runtime server instead (see there).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${INFERSHIFT_REALENGINE_DIR:-$HOME/.cache/infershift/realengine}
hash=$(cat "$here"/cli/go.{mod,sum} "$here"/provider/go.{mod,sum} "$here/build.sh" | sha256sum | cut -c1-16)
out=$root/pulumi-$hash
if [[ -x $out/bin/pulumi && -x $out/bin/pulumi-resource-kubernetes ]]; then
    echo "$out/bin"
    exit 0
fi
if [[ ${1:-} == --where ]]; then
    echo "$out/bin"
    exit 1
fi

# The versions the binaries report: the CLI's is its module version; the provider's module has
# only a pseudo-version, whose commit (f47bc2d6f199) upstream tagged v4.25.0.
PULUMI_VERSION=v3.276.0
PROVIDER_VERSION=4.25.0
PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4

export GOFLAGS=-mod=readonly
export CGO_ENABLED=0
mkdir -p "$root"
work=$(mktemp -d "$root/.pulumi-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

cd "$here/cli"
echo "building pulumi $PULUMI_VERSION ..." >&2
nice -n 10 go build -trimpath -o "$work/bin/pulumi" \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
    github.com/pulumi/pulumi/pkg/v3/cmd/pulumi

# The provider's main package embeds schema-embed.json and terraform-mapping-embed.json, which its
# own `go generate` (generate.go: the schema with its version set) writes beside main.go; the module
# zip ships only their sources. So its cmd folder is copied into a scratch module with provider/'s
# go.mod (the same pins), generated there, and built.
echo "building pulumi-resource-kubernetes $PROVIDER_VERSION ..." >&2
cd "$here/provider"
go mod download "$PROVIDER_MODULE"
src=$(go list -m -f '{{.Dir}}' "$PROVIDER_MODULE")/cmd/pulumi-resource-kubernetes
mkdir -p "$work/mod/cmd/pulumi-resource-kubernetes"
cp "$here/provider/go.mod" "$here/provider/go.sum" "$work/mod/"
cp "$src"/*.go "$src"/*.json "$work/mod/cmd/pulumi-resource-kubernetes/"
chmod -R u+w "$work/mod"
(cd "$work/mod/cmd/pulumi-resource-kubernetes" && VERSION=$PROVIDER_VERSION nice -n 10 go run generate.go)
(cd "$work/mod" && nice -n 10 go build -trimpath -o "$work/bin/pulumi-resource-kubernetes" \
    -ldflags "-s -w -X $PROVIDER_MODULE/pkg/version.Version=$PROVIDER_VERSION" ./cmd/pulumi-resource-kubernetes)

"$work/bin/pulumi" version >&2
rm -rf "$out"
mkdir -p "$out"
mv "$work/bin" "$out/bin"
echo "built in $((SECONDS - start)) s: $out/bin" >&2
echo "$out/bin"
