# Container image of pos-profile-sync.
#
# Build from the repository root (BuildKit or the classic builder both work),
# tagged with the version in Cargo.toml, which is also the Helm chart's
# appVersion (the tag the chart deploys by default), then push it to your
# registry (docs/operations.md, "Image"):
#
#   VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
#   docker build \
#     --build-arg VERSION="$VERSION" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t registry.example.com/retail/pos-profile-sync:"$VERSION" .
#   docker push registry.example.com/retail/pos-profile-sync:"$VERSION"
#
# Check the result (the image has no shell; the entrypoint is the binary):
#
#   docker run --rm pos-profile-sync:TAG --help
#   docker run --rm -v "$PWD/config.toml:/etc/pos-profile-sync/config.toml:ro" \
#     pos-profile-sync:TAG check-config --config /etc/pos-profile-sync/config.toml
#
# Stages: `chef` (toolchain, C build tools, cargo-chef) -> `planner` (a recipe of
# the dependency graph, from the manifests only) -> `builder` (dependencies
# compiled in their own layer, reused until Cargo.toml or Cargo.lock change; then
# the crate itself) -> `runtime` (distroless, non-root, the binary only).
#
# librdkafka is compiled from source by rdkafka-sys (gcc, g++, make, perl, zlib);
# zlib is linked statically so the runtime image needs only glibc and libgcc.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.77
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake perl pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    LIBZ_SYS_STATIC=1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The patched rdkafka crate ([patch.crates-io] in Cargo.toml) is a dependency
# by path: the recipe names it, the cook step needs its source.
COPY vendor vendor
# Dependencies only (librdkafka included): the slow layer, cached on its own.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# The release profile keeps line tables, so a panic's backtrace names files and
# lines; they are most of the binary (139 MB of it). Compressed they still work
# and the binary is 56 MB (stripped it would be 22 MB, with no line numbers).
RUN cargo build --release --locked --bin pos-profile-sync \
 && install -D -m 0755 target/release/pos-profile-sync /out/pos-profile-sync \
 && objcopy --compress-debug-sections=zlib /out/pos-profile-sync
# The runtime image has glibc and libgcc only: refuse a binary that needs more.
RUN set -eu; \
    needed="$(ldd /out/pos-profile-sync | awk '{print $1}' \
      | grep -Ev '^(linux-vdso\.so|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so|/lib64/ld-linux-x86-64\.so|/lib/ld-linux-aarch64\.so)' || true)"; \
    if [ -n "$needed" ]; then echo "libraries missing from the runtime image: $needed" >&2; exit 1; fi; \
    /out/pos-profile-sync --help > /dev/null

FROM ${RUNTIME_IMAGE} AS runtime
ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="pos-profile-sync" \
      org.opencontainers.image.description="Kafka consumer group that turns point-of-sale purchases into Adobe Target profile updates, at least once." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
COPY --from=builder /out/pos-profile-sync /usr/local/bin/pos-profile-sync
# distroless' "nonroot" user, by number so that runAsNonRoot can verify it.
USER 65532:65532
# /metrics, /healthz, /readyz ([server] listen).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/pos-profile-sync"]
CMD ["run", "--config", "/etc/pos-profile-sync/config.toml"]
