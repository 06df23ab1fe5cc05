# syntax=docker/dockerfile:1
# Multi-stage build of a static meshwaf binary on a distroless base.
# RUNTIME_IMAGE: the distroless "static" image (Debian 12, nonroot tag) from
# the registry or mirror your cluster pulls from.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same build CI runs.
RUN scripts/build.sh /out/meshwaf "${VERSION}"

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/meshwaf /meshwaf
# Numeric non-root user (distroless "nonroot"), so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 9000 9090
ENTRYPOINT ["/meshwaf"]
CMD ["serve"]
