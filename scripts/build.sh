#!/bin/sh
# The one build of the meshwaf binary: CI and the Dockerfile both run it.
# Usage: scripts/build.sh OUTPUT [VERSION]
# VERSION defaults to internal/version/VERSION, the one source of the
# release version.
set -eu
out=${1:?usage: scripts/build.sh OUTPUT [VERSION]}
root=$(cd "$(dirname "$0")/.." && pwd)
version=${2:-$(cat "$root/internal/version/VERSION")}
# no_fs_access: Coraza keeps request bodies and multipart file parts in
# memory and never needs a writable temp dir, so meshwaf runs on a read-only
# root filesystem.
CGO_ENABLED=0 go build -tags no_fs_access -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.buildVersion=${version}" \
	-o "$out" ./cmd/meshwaf
