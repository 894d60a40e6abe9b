#!/bin/sh
# Entrypoint of the locally built LocalStack image (docker/images.sh): LocalStack's runtime in the
# foreground, as the official image runs it. It prints "Ready." when it serves (testcontainers
# waits for that line) and runs the scripts in /etc/localstack/init/ready.d then.
set -e
exec python -m localstack.runtime.main "$@"
