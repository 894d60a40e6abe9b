#!/bin/sh
# Runs inside LocalStack when it is ready: the bucket the demo uses (`tickerlake init` would also create it).
awslocal s3 mb s3://tickerlake 2>/dev/null || true
