#!/bin/sh
# The one build of the meshwaf binary: CI and the Dockerfile both run it.
# Usage: scripts/build.sh OUTPUT [VERSION]
set -eu
out=${1:?usage: scripts/build.sh OUTPUT [VERSION]}
version=${2:-dev}
CGO_ENABLED=0 go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.buildVersion=${version}" \
	-o "$out" ./cmd/meshwaf
