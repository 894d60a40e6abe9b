# Recipes for Nix users (`nix develop` provides just); each delegates to ./dev, which works without just.

# Offline demo on the embedded lake: simulator, backfill, collect, process, query.
up: demo

demo:
    ./dev demo

test *ARGS:
    ./dev test {{ARGS}}

bench:
    ./dev bench

bench-s3:
    ./dev bench-s3

emulators:
    ./dev emulators

# The demo against LocalStack from compose.yaml (needs Docker).
localstack-demo:
    docker compose up -d --wait localstack
    TICKERLAKE_TARGET=localstack TICKERLAKE_LAKE=s3://tickerlake/demo ./dev demo
