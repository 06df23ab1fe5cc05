# syntax=docker/dockerfile:1
# Multi-stage build of a static meshwaf binary on a distroless base.
# RUNTIME_IMAGE: the distroless "static" image (Debian 12, nonroot tag) from
# the registry or mirror your cluster pulls from.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=distroless/static-debian12:nonroot
# ACCEL_RUNTIME_IMAGE: distroless "cc" (glibc, libstdc++) for the accelerated target.
ARG ACCEL_RUNTIME_IMAGE=distroless/cc-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# The same build CI runs.
RUN scripts/build.sh /out/meshwaf "${VERSION}"

# --- Accelerated build (issue 7), opt-in: docker build --target accelerated .
# meshwaf's @rx asks RE2 (Debian's libre2 through cgo, -tags re2_cgo) before
# Go's regexp; verdicts are the same as the default build's. It needs glibc,
# libstdc++ and libre2 at run time, so it runs on distroless "cc" with libre2
# copied in. These stages sit before the default runtime stage so that a
# plain `docker build .` still builds the static pure-Go image.
FROM ${GO_IMAGE} AS build-accelerated
RUN apt-get update && apt-get install -y --no-install-recommends libre2-dev \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -tags "no_fs_access re2_cgo" -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.buildVersion=${VERSION}" -o /out/meshwaf ./cmd/meshwaf \
	&& mkdir -p /out/lib && cp -L $(dpkg -L libre2-9 | grep '/libre2\.so\.') /out/lib/

FROM ${ACCEL_RUNTIME_IMAGE} AS accelerated
COPY --from=build-accelerated /out/lib/ /usr/local/lib/
ENV LD_LIBRARY_PATH=/usr/local/lib
COPY --from=build-accelerated /out/meshwaf /meshwaf
USER 65532:65532
EXPOSE 9000 9090
ENTRYPOINT ["/meshwaf"]
CMD ["serve"]
# --- end of the accelerated build; the default image follows.

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/meshwaf /meshwaf
# Numeric non-root user (distroless "nonroot"), so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 9000 9090
ENTRYPOINT ["/meshwaf"]
CMD ["serve"]
