# syntax=docker/dockerfile:1
#
# The fedimds image: the binary on distroless cc (glibc, libgcc, CA certificates and nothing
# else), non-root (uid 65532), no shell, nothing exposed: fedimds listens on loopback and is
# meant to share a network namespace with its callers (a pod, a compose service).
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t fedimds:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 --target capture -t fedimds-capture:0.1.0 .
#
# The build stage runs on the build machine's own platform and cross-compiles, so an arm64
# image never builds under emulation. The `capture` target is the legacy-IMDS init container:
# iptables and deploy/capture/capture-imds.sh, nothing else.

ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
ARG BUILDARCH
WORKDIR /src
# The Rust target and, when cross-compiling, the C cross toolchain (ring has C and assembly).
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; cc=x86_64-linux-gnu-gcc; pkgs="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
      arm64) triple=aarch64-unknown-linux-gnu; cc=aarch64-linux-gnu-gcc; pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
      *) echo "unsupported TARGETARCH: $TARGETARCH (amd64 or arm64)" >&2; exit 1 ;; \
    esac; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends $pkgs; \
      rm -rf /var/lib/apt/lists/*; \
    else \
      cc=gcc; \
    fi; \
    rustup target add "$triple"; \
    printf '%s\n%s\n' "$triple" "$cc" > /target-toolchain
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    triple=$(sed -n 1p /target-toolchain); \
    cc=$(sed -n 2p /target-toolchain); \
    upper=$(echo "$triple" | tr 'a-z-' 'A-Z_'); \
    lower=$(echo "$triple" | tr '-' '_'); \
    export "CARGO_TARGET_${upper}_LINKER=$cc" "CC_${lower}=$cc"; \
    cargo build --release --locked -p fedimds --target "$triple"; \
    install -D -m 0755 "target/$triple/release/fedimds" /out/fedimds; \
    install -d -m 0700 /out/run-fedimds

# The legacy-IMDS capture init container (Kubernetes): runs the one capture script and exits.
# Needs only CAP_NET_ADMIN: Debian 12's iptables is the nftables backend (netlink, no raw socket).
FROM debian:bookworm-slim AS capture
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --chmod=0755 deploy/capture/capture-imds.sh /usr/local/bin/capture-imds.sh
ENTRYPOINT ["/usr/local/bin/capture-imds.sh"]

# The fedimds image (the default target: last stage).
FROM gcr.io/distroless/cc-debian12:nonroot AS fedimds
COPY --from=build /out/fedimds /usr/local/bin/fedimds
# Where identity_header_file can go; owned by the runtime user so a fresh volume mounted here
# (compose) starts writable.
COPY --from=build --chown=65532:65532 /out/run-fedimds /run/fedimds
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
ENV FEDIMDS_CONFIG=/etc/fedimds/fedimds.toml
ENTRYPOINT ["/usr/local/bin/fedimds"]
CMD ["serve"]
