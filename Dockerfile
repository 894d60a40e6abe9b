# tickerlake container image: a Rust builder stage and a slim Debian runtime running the binary
# as a non-root user.
#
#   docker build -t tickerlake .                                   # compile inside Docker
#   docker run --rm tickerlake --lake s3://my-bucket/lake doctor
#
# Build arguments (all optional):
#   RUST_IMAGE     the builder's base (default rust:1-slim-bookworm)
#   RUNTIME_IMAGE  the runtime's base (default debian:bookworm-slim); any Debian/Ubuntu with
#                  glibc at least the builder's
#
# Targets: `runtime` (the default, last stage) compiles in the `build` stage; `runtime-prebuilt`
# takes prebuilt/tickerlake from the build context instead: a release binary built on the host, as
# docker/images.sh does on machines with no registry, where compiling the bundled DuckDB inside
# Docker would take half an hour:
#   docker build --target runtime-prebuilt --build-arg RUNTIME_IMAGE=tickerlake/debian:bookworm …
# The stage order lets the classic builder (no BuildKit) stop at runtime-prebuilt without
# touching the Rust stage; BuildKit (the default since Docker 23) builds only what the target needs.
ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS runtime-base
# ca-certificates: HTTPS to Binance and AWS. No other package: the binary is self-contained
# apart from glibc and libstdc++ (present in every Debian base).
RUN if [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 tickerlake \
 && useradd --system --uid 10001 --gid tickerlake --home-dir /var/lib/tickerlake --create-home --shell /usr/sbin/nologin tickerlake
COPY docker/healthcheck.sh /usr/local/bin/tickerlake-healthcheck
USER tickerlake:tickerlake
WORKDIR /var/lib/tickerlake
# Where `serve-cert` writes the compose stack's TLS certificate: a volume mounted here starts with
# this directory's owner, so the non-root user can write it.
RUN mkdir -p /var/lib/tickerlake/tls
# A local lake lives here unless TICKERLAKE_LAKE says s3://…; mount a volume on it to keep it.
ENV TICKERLAKE_LAKE=/var/lib/tickerlake/lake
VOLUME ["/var/lib/tickerlake"]
EXPOSE 5433
# `serve`: healthy once its PostgreSQL port accepts connections. Other commands (the hourly `run`
# worker): healthy while the process runs.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["tickerlake-healthcheck"]
ENTRYPOINT ["tickerlake"]
CMD ["--help"]

FROM runtime-base AS runtime-prebuilt
COPY prebuilt/tickerlake /usr/local/bin/tickerlake

FROM ${RUST_IMAGE} AS build
# The bundled DuckDB is C++; aws-lc (rustls' crypto) wants cmake on some platforms.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ make cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY benches benches
# .cargo/config.toml pins x86_64-unknown-linux-gnu for the host; build for this image's platform.
RUN triple="$(rustc -vV | sed -n 's/^host: //p')" \
 && cargo build --release --locked --target "$triple" --bin tickerlake \
 && install -D "target/$triple/release/tickerlake" /out/tickerlake

FROM runtime-base AS runtime
COPY --from=build /out/tickerlake /usr/local/bin/tickerlake
