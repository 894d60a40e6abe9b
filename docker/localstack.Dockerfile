# LocalStack 4.13.1 (community, no auth token) on the Debian base built by docker/images.sh:
# Python + localstack-core[runtime] with the pins the tests use (./dev emulators). Tagged
# localstack/localstack:4.13.1 so testcontainers and compose.yaml use it and never pull.
# The Python wheels come in the build context (wheels/, made by `pip wheel` on the host, whose
# network and certificate authorities are the ones that work), so no RUN step needs PyPI.
ARG BASE_IMAGE=tickerlake/debian:bookworm

FROM ${BASE_IMAGE} AS python
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv curl >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/*.log

FROM python AS venv
COPY wheels /tmp/wheels
ARG PINS
RUN test -n "$PINS" && python3 -m venv /opt/localstack \
 && /opt/localstack/bin/pip install --quiet --no-cache-dir --disable-pip-version-check --no-index --find-links /tmp/wheels $PINS

FROM python
COPY --from=venv /opt/localstack /opt/localstack
# The marker the official image has: LocalStack then uses its in-container defaults
# (/var/lib/localstack; init hooks from /etc/localstack/init/{boot,start,ready,shutdown}.d).
RUN mkdir -p /usr/lib/localstack /var/lib/localstack /etc/localstack/init/boot.d /etc/localstack/init/start.d \
      /etc/localstack/init/ready.d /etc/localstack/init/shutdown.d \
 && echo 4.13.1 > /usr/lib/localstack/.community-version
COPY localstack-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/opt/localstack/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    GATEWAY_LISTEN=0.0.0.0:4566 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 DNS_ADDRESS=0
WORKDIR /var/lib/localstack
EXPOSE 4566
HEALTHCHECK --interval=2s --timeout=3s --retries=60 CMD curl -sf http://127.0.0.1:4566/_localstack/health >/dev/null || exit 1
ENTRYPOINT ["docker-entrypoint.sh"]
