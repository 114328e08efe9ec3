# syntax=docker/dockerfile:1
# The Tandem services in one image: tandem-gateway, tandem-sequencer, tandem-analytics (the example
# consumer of the events topic, docs/ANALYTICS.md), tandem-standalone and tandem-loadgen in
# /usr/local/bin. Choose one with the container's command, e.g.
#   docker build -t tandem .
#   docker run --rm tandem tandem-gateway --help
# Kubernetes manifests: k8s/ (each Deployment names its binary in `command`).

# The builder and the runtime share a Debian release (12, glibc 2.36): a binary linked against a
# newer glibc than the runtime's would not start.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# rdkafka-sys compiles librdkafka from source with its own configure script (bash, make, a C
# compiler; no cmake, and no OpenSSL, SASL or zlib headers, since none of those features is enabled:
# see the root Cargo.toml). The rust image is Debian's buildpack-deps, which has them already; the
# explicit list keeps a change of base image from failing obscurely deep in a build script.
# protoc comes from the protoc-bin-vendored crate, rusqlite bundles SQLite: no other system library.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The service binaries sit behind the crates' `service` feature (without it the libraries build
# without librdkafka for the single-process mode); tandem-analytics, a Kafka consumer only, has no
# such feature. Cache mounts keep the registry and the target directory between builds; the
# binaries are copied out because a cache mount is not in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p tandem-gateway -p tandem-sequencer -p tandem-analytics -p tandem-standalone -p tandem-loadgen \
        --features tandem-gateway/service,tandem-sequencer/service \
    && mkdir -p /out \
    && cp target/release/tandem-gateway target/release/tandem-sequencer target/release/tandem-analytics \
          target/release/tandem-standalone target/release/tandem-loadgen /out/

# Distroless "cc": glibc, libgcc and CA certificates, no shell, no package manager; the `nonroot`
# variant runs as uid/gid 65532. The Kubernetes manifests set the same uid and a read-only root file
# system, and their preStop hooks use the kubelet's built-in `sleep` action, since there is no
# /bin/sleep here.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# tandem-standalone keeps its documents in ./data: the nonroot user's home is writable by it
# (`docker run -v tandem-data:/home/nonroot/data ...`); the distributed services write nothing.
WORKDIR /home/nonroot
# gateway / standalone HTTP and WebSocket, sequencer gRPC, sequencer and analytics metrics and health.
EXPOSE 8080 50051 9090
# No HEALTHCHECK: there is no shell or HTTP client in the image, and the orchestrator probes the
# real endpoints (k8s/: /healthz, /readyz, grpc.health.v1). The default command runs the single
# process mode on all interfaces without authentication (it says so at start): a first look only.
# checkov:skip=CKV_DOCKER_2:no shell or HTTP client in a distroless image; Kubernetes probes the real endpoints
CMD ["/usr/local/bin/tandem-standalone", "--listen", "0.0.0.0:8080", "--insecure-no-auth", "--cookie-secure", "false"]
