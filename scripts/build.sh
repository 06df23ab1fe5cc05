#!/bin/sh
# The one build of the meshwaf binary: CI and the Dockerfile both run it.
# Usage: scripts/build.sh OUTPUT [VERSION] [EXTRA_TAGS]
# VERSION defaults to internal/version/VERSION, the one source of the
# release version. EXTRA_TAGS are added to no_fs_access: the server image
# passes nodoctor (doctor runs on an operator's machine; client-go's type
# registrations would cost every server about 15 MiB).
set -eu
out=${1:?usage: scripts/build.sh OUTPUT [VERSION]}
root=$(cd "$(dirname "$0")/.." && pwd)
version=${2:-$(cat "$root/internal/version/VERSION")}
tags="no_fs_access${3:+ $3}"
# no_fs_access: Coraza keeps request bodies and multipart file parts in
# memory and never needs a writable temp dir, so meshwaf runs on a read-only
# root filesystem.
CGO_ENABLED=0 go build -tags "$tags" -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.buildVersion=${version}" \
	-o "$out" ./cmd/meshwaf
