#!/bin/sh
# LocalStack runs this when it is ready (compose.yaml mounts this folder on
# /etc/localstack/init/ready.d): the bucket the stack's lake lives in. Idempotent: on a restart,
# with or without LocalStack persistence, an existing bucket is kept as it is.
# Plain HTTP with curl (in the official image and the local one; awslocal is only in the official).
set -eu
bucket="${TICKERLAKE_BUCKET:-tickerlake}"
endpoint="http://127.0.0.1:${GATEWAY_PORT:-4566}"
if curl -sf -o /dev/null -I "$endpoint/$bucket"; then
  echo "tickerlake init hook: bucket $bucket already exists"
  exit 0
fi
curl -sf -o /dev/null -X PUT "$endpoint/$bucket"
curl -sf -o /dev/null -I "$endpoint/$bucket"
echo "tickerlake init hook: created bucket $bucket"
