# Multi-stage build of a static meshwaf binary on an empty base.
#
#   docker build -t <your-registry>/meshwaf:v0.1.0 .
#
# Every image named here is a short name that resolves on a default Docker
# set-up; a mirror is --build-arg GO_IMAGE=<your-mirror>/golang:<tag>.
# The runtime stages are FROM scratch: nothing to pull, nothing but the
# binary (and, for the accelerated target, the libraries it links).
# GO_IMAGE: the Go toolchain, pinned to the patch release CI uses.
ARG GO_IMAGE=golang:1.26.8-bookworm
# VERSION: the release, equal to internal/version/VERSION (a test keeps them
# equal); it stamps the binary and labels the image.
ARG VERSION=v0.1.0

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION
# The same build CI runs; the server image leaves out `meshwaf doctor`
# (an operator's command, whose Kubernetes client would cost every server
# about 15 MiB of memory).
RUN scripts/build.sh /out/meshwaf "${VERSION}" nodoctor

# --- Accelerated build (issue 7), opt-in: docker build --target accelerated .
# meshwaf's @rx asks RE2 (Debian's libre2 through cgo, -tags re2_cgo) before
# Go's regexp; verdicts are the same as the default build's. The binary
# needs glibc, libstdc++ and libre2 at run time: the libraries it links (as
# ldd lists them, with the loader) are copied into an empty image. These
# stages sit before the default runtime stage so that a plain
# `docker build .` still builds the static pure-Go image.
FROM ${GO_IMAGE} AS build-accelerated
RUN apt-get update && apt-get install -y --no-install-recommends libre2-dev \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION
RUN CGO_ENABLED=1 go build -tags "no_fs_access re2_cgo nodoctor" -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.buildVersion=${VERSION}" -o /out/root/meshwaf ./cmd/meshwaf \
	&& for lib in $(ldd /out/root/meshwaf | grep -o '/[^ ]*'); do cp -L --parents "$lib" /out/root/; done

FROM scratch AS accelerated
ARG VERSION
LABEL org.opencontainers.image.title="meshwaf" org.opencontainers.image.version="${VERSION}"
COPY --from=build-accelerated /out/root/ /
USER 65532:65532
EXPOSE 9000 9090
ENTRYPOINT ["/meshwaf"]
CMD ["serve"]
# --- end of the accelerated build; the default image follows.

FROM scratch
ARG VERSION
LABEL org.opencontainers.image.title="meshwaf" org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/meshwaf /meshwaf
# Numeric non-root user, so that Kubernetes' runAsNonRoot can verify it
# without an /etc/passwd.
USER 65532:65532
EXPOSE 9000 9090
ENTRYPOINT ["/meshwaf"]
CMD ["serve"]
