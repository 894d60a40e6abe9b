#!/usr/bin/env bash
# Build the container images tickerlake's tests and compose stack use, from Debian packages only:
# no container registry is needed (none is reachable on the development machines).
#
#   docker/images.sh [all|base|localstack|tickerlake]     (default: all)
#
#   base        tickerlake/debian:bookworm   a minimal Debian root filesystem made with debootstrap
#               from the Debian mirror this machine's apt already uses, then `docker import`ed
#   localstack  localstack/localstack:4.13.1  base + Python + localstack-core[runtime]==4.13.1 with
#               the pins of `./dev emulators`: the tag testcontainers and compose.yaml look for, so
#               they find it locally and never pull
#   tickerlake  tickerlake/tickerlake:local   the Dockerfile's runtime stage on the base, with a
#               release binary built on the host (TICKERLAKE_BIN=path to use one you have;
#               TICKERLAKE_IMAGE_TAG=another tag, e.g. ./dev test's tickerlake/tickerlake:test)
#
# Cached: every image carries a label with the hash of its inputs; an image whose label matches is
# kept, so a second run takes seconds. TICKERLAKE_REBUILD_IMAGES=1 rebuilds all of them.
# Derived images are `docker build`s FROM the imported base (no registry involved); their RUN
# steps reach the Debian mirror and PyPI through the host's network.
# Needs: root (or sudo), debootstrap, a Docker engine. Overrides: TICKERLAKE_DEBIAN_MIRROR,
# TICKERLAKE_DEBIAN_SUITE (default: read from the apt sources and /etc/os-release).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_TAG=tickerlake/debian:bookworm
LOCALSTACK_TAG=localstack/localstack:4.13.1
TICKERLAKE_TAG="${TICKERLAKE_IMAGE_TAG:-tickerlake/tickerlake:local}"
# Bump when the recipe changes in a way the hashed inputs below do not show.
RECIPE=1

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tickerlake-target}"
WORK="${TICKERLAKE_IMAGE_WORK:-$HOME/.cache/tickerlake-images}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

SUDO=()
[[ $(id -u) == 0 ]] || SUDO=(sudo)

docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed): start one, or skip the container tests (./dev test says so)"

# The Debian mirror and suite apt uses on this machine: deb822 .sources files first, then
# one-line .list files; the entry whose suite is this release's codename (not -security/-updates).
apt_mirror() {
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$suite" '
      function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uri != "") { print uri; found = 1; exit } types = suites = uri = ""; enabled = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      tolower($1) == "types:" { $1 = ""; types = $0; sub(/^ +/, "", types) }
      tolower($1) == "suites:" { $1 = ""; suites = $0; sub(/^ +/, "", suites) }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { if (!found) flush() }
    ' "$f" | head -n1
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb [options] URI SUITE COMPONENTS…
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }'
  done
}

SUITE="${TICKERLAKE_DEBIAN_SUITE:-$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")}"
[[ -n $SUITE ]] || die "cannot tell the Debian suite from /etc/os-release: set TICKERLAKE_DEBIAN_SUITE (e.g. bookworm)"
MIRROR="${TICKERLAKE_DEBIAN_MIRROR:-$(apt_mirror "$SUITE" | head -n1)}"

label_of() { docker image inspect --format '{{ index .Config.Labels "org.tickerlake.inputs" }}' "$1" 2>/dev/null || true; }
is_current() { [[ ${TICKERLAKE_REBUILD_IMAGES:-0} != 1 && "$(label_of "$1")" == "$2" ]]; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
# After a rebuild, remove the image the tag pointed at before (if nothing else uses it).
drop_old() { local old=$1 tag=$2; [[ -n $old && $old != "$(image_id "$tag")" ]] && docker rmi "$old" >/dev/null 2>&1 || true; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# Root filesystems and build contexts, removed on exit.
TMP_DIRS=()
cleanup() {
  local d
  for d in "${TMP_DIRS[@]}"; do "${SUDO[@]}" rm -rf "$d"; done
}
trap cleanup EXIT

BASE_PACKAGES=ca-certificates
BASE_INPUTS="recipe=$RECIPE suite=$SUITE packages=$BASE_PACKAGES"

build_base() {
  if is_current "$BASE_TAG" "$BASE_INPUTS"; then
    say "$BASE_TAG is up to date"
    return
  fi
  # A new machine has no debootstrap: install it from Debian when running as root.
  if ! command -v debootstrap >/dev/null && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
  fi
  command -v debootstrap >/dev/null || die "debootstrap is missing: sudo apt-get install debootstrap"
  [[ -n $MIRROR ]] || die "no Debian mirror for suite $SUITE in the apt sources: set TICKERLAKE_DEBIAN_MIRROR"
  say "debootstrap $SUITE (minbase) from the apt mirror $MIRROR"
  local old; old=$(image_id "$BASE_TAG")
  mkdir -p "$WORK"
  local t0=$SECONDS dir; dir=$(mktemp -d "$WORK/rootfs.XXXXXX")
  TMP_DIRS+=("$dir")
  "${SUDO[@]}" debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$dir" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed; its log is $WORK/debootstrap.log"
  # Nothing an image needs at run time: package lists and caches, logs, the host's DNS.
  "${SUDO[@]}" rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/*.log "$dir"/tmp/*
  : | "${SUDO[@]}" tee "$dir/etc/resolv.conf" >/dev/null
  "${SUDO[@]}" tar --numeric-owner -C "$dir" -c . \
    | docker import --change "LABEL org.tickerlake.inputs=\"$BASE_INPUTS\"" --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
  drop_old "$old" "$BASE_TAG"
  say "$BASE_TAG built in $((SECONDS - t0)) s"
}

build_localstack() {
  # The versions `./dev emulators` installs (one source of truth: read them from ./dev).
  local pins
  pins=$(sed -n '/^emulators()/,/^}/p' dev | grep -oE "'localstack-core\[runtime\]==[^']+'|'(cryptography|pyopenssl|cbor2|joserfc)<[^']+'|[[:space:]]service_identity([[:space:]]|$)" | tr -d "' " | sort -u | tr '\n' ' ')
  [[ $(wc -w <<<"$pins") == 6 ]] || die "cannot read the 6 LocalStack pins from ./dev (emulators function), got: $pins"
  local inputs; inputs="base=$(hash_of <<<"$BASE_INPUTS") pins=$(hash_of <<<"$pins") files=$(hash_of docker/localstack.Dockerfile docker/localstack-entrypoint.sh) recipe=$RECIPE"
  if is_current "$LOCALSTACK_TAG" "$inputs"; then
    say "$LOCALSTACK_TAG is up to date"
    return
  fi
  say "building $LOCALSTACK_TAG: Python and $pins"
  local t0=$SECONDS old; old=$(image_id "$LOCALSTACK_TAG")
  # Wheels are made on the host (its PyPI access and CAs work; a container may sit behind a
  # TLS-inspecting proxy it does not trust), cached per pin set, and copied into a build context.
  local wheels="$WORK/wheels-$(hash_of <<<"$pins")"
  if [[ ! -f $wheels/.complete ]]; then
    [[ -x $WORK/pip/bin/pip ]] || python3 -m venv "$WORK/pip" || die "python3 -m venv failed: install python3-venv"
    # shellcheck disable=SC2086 # one argument per pin
    "$WORK/pip/bin/pip" wheel --quiet --disable-pip-version-check --wheel-dir "$wheels" $pins >&2 \
      || die "pip wheel failed (above): PyPI must be reachable from this machine"
    touch "$wheels/.complete"
  fi
  local ctx; ctx=$(mktemp -d)
  TMP_DIRS+=("$ctx")
  cp docker/localstack.Dockerfile docker/localstack-entrypoint.sh "$ctx/"
  cp -r "$wheels" "$ctx/wheels"
  # Only the apt step reaches out (to the Debian mirror the base came from).
  DOCKER_BUILDKIT=0 docker build --quiet --network host -f "$ctx/localstack.Dockerfile" \
    --build-arg BASE_IMAGE="$BASE_TAG" --build-arg PINS="$pins" \
    --label "org.tickerlake.inputs=$inputs" -t "$LOCALSTACK_TAG" "$ctx" >/dev/null \
    || die "building $LOCALSTACK_TAG failed (above)"
  drop_old "$old" "$LOCALSTACK_TAG"
  say "$LOCALSTACK_TAG built in $((SECONDS - t0)) s"
}

# The release binary: TICKERLAKE_BIN, else a host release build (the Dockerfile's `prebuilt` path).
release_binary() {
  if [[ -n ${TICKERLAKE_BIN:-} ]]; then
    [[ -x $TICKERLAKE_BIN ]] || die "TICKERLAKE_BIN=$TICKERLAKE_BIN is not an executable file"
    echo "$TICKERLAKE_BIN"
    return
  fi
  say "cargo build --release --bin tickerlake (the first release build compiles DuckDB: long on 2 cores)"
  cargo build --release --locked --bin tickerlake >&2
  echo "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/tickerlake"
}

build_tickerlake() {
  local bin; bin=$(release_binary)
  local inputs; inputs="base=$(hash_of <<<"$BASE_INPUTS") bin=$(hash_of "$bin") dockerfile=$(hash_of Dockerfile docker/healthcheck.sh) recipe=$RECIPE"
  if is_current "$TICKERLAKE_TAG" "$inputs"; then
    say "$TICKERLAKE_TAG is up to date"
    return
  fi
  say "building $TICKERLAKE_TAG from the Dockerfile (runtime on $BASE_TAG, prebuilt binary $bin)"
  local ctx old; ctx=$(mktemp -d) old=$(image_id "$TICKERLAKE_TAG")
  TMP_DIRS+=("$ctx")
  cp Dockerfile "$ctx/"
  mkdir -p "$ctx/docker" "$ctx/prebuilt"
  cp docker/healthcheck.sh "$ctx/docker/"
  cp "$bin" "$ctx/prebuilt/tickerlake"
  # The classic builder stops at the target: no Rust image, no compiling in Docker, no network.
  DOCKER_BUILDKIT=0 docker build --quiet --target runtime-prebuilt --build-arg RUNTIME_IMAGE="$BASE_TAG" \
    --label "org.tickerlake.inputs=$inputs" -t "$TICKERLAKE_TAG" "$ctx" >/dev/null \
    || die "building $TICKERLAKE_TAG failed (above)"
  drop_old "$old" "$TICKERLAKE_TAG"
  say "$TICKERLAKE_TAG built"
}

case "${1:-all}" in
  base) build_base ;;
  localstack) build_base; build_localstack ;;
  tickerlake) build_base; build_tickerlake ;;
  all) build_base; build_localstack; build_tickerlake ;;
  *) sed -n '2,21p' "$0" >&2; exit 2 ;;
esac
