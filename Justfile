# tickerlake recipes (`nix develop` provides just; `pip install rust-just` elsewhere). Each one
# delegates to ./dev, which works without just. `just` alone lists them.

# List the recipes.
default:
    @just --list

# The stack in Docker (images built first, cached): LocalStack, hourly worker, serve, Grafana on :3000.
up:
    ./dev up

# The same stack offline: the Binance simulator instead of Binance, 60 days backfilled from its archive.
up-offline:
    ./dev up --offline

# Stop the stack (LocalStack's S3 is in memory: the lake goes with it).
down:
    ./dev down

# Follow the stack's logs (all services, or the ones named: just logs worker).
logs *SERVICES:
    ./dev logs {{SERVICES}}

# The stack's serve CA (PEM), for clients' sslrootcert with sslmode=verify-full.
serve-ca:
    @./dev serve-ca

# Offline demo without Docker: simulator, backfill, collect, process, query the embedded lake.
demo:
    ./dev demo

# The whole test suite, as CI runs it (emulators, and the container tests when Docker answers).
test *ARGS:
    ./dev test {{ARGS}}

# The container tests only: testcontainers LocalStack scenarios and the compose stack test.
e2e:
    ./dev e2e

# Build the container images from Debian packages (no registry needed; cached).
images:
    ./dev images

# Benchmarks: criterion, and a month's full process (wall time, peak RSS).
bench:
    ./dev bench

# The month and the year of history against ministack (S3).
bench-s3:
    ./dev bench-s3

# Install the S3 emulators (ministack, moto, LocalStack) into the cached virtualenvs.
emulators:
    ./dev emulators

# Format the code.
fmt:
    cargo fmt

# Style and lints as CI checks them (rustfmt --check, clippy -D warnings).
lint:
    ./dev lint
