#!/usr/bin/env bash
# The compose stack, tested for real (./dev test and ./dev e2e run it after building the images):
#   1. compose.yaml validates (`config`) and says what the issue asks: only 127.0.0.1 ports, named
#      volumes, health checks and depends_on conditions, Grafana's image pinned, provisioning
#      mounted, its datasource at the `serve` service over TLS with verify-full and the stack's CA
#      (Grafana's image cannot be had here, so it is checked by configuration only);
#   2. `up` of everything but Grafana, offline profile (the simulator instead of Binance), on free
#      127.0.0.1 ports in a project of its own: the worker writes the current hour into LocalStack's
#      bucket; `serve` answers psql over TLS verified with the stack's CA (sslmode=verify-full) with
#      rows, and every dashboard query (Grafana macros expanded as the PostgreSQL datasource does)
#      returns rows;
#   3. the LocalStack init hook is idempotent: after a restart the bucket is back, the hook ran twice.
# Every check prints PASS or FAIL; the exit status is the number of failures (0: all passed).
# Needs a Docker engine, the images (TICKERLAKE_IMAGE, default tickerlake/tickerlake:local, and
# localstack/localstack:4.13.1: docker/images.sh), curl, psql and python3 (PyYAML comes from a
# cached virtualenv if python3 lacks it).
set -uo pipefail
cd "$(dirname "$0")/../.."

IMAGE="${TICKERLAKE_IMAGE:-tickerlake/tickerlake:local}"
export TICKERLAKE_IMAGE="$IMAGE"
PROJECT="tickerlake-stack-test-$$"
FAILS=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; FAILS=$((FAILS + 1)); }
skip() { printf '\n*** SKIPPED %s ***\n\n' "$*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose -p "$PROJECT" "$@"; else docker-compose -p "$PROJECT" "$@"; fi
}

for tool in docker curl psql python3; do
  command -v $tool >/dev/null || { echo "error: $tool is missing: install it (psql: apt-get install postgresql-client)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers (docker info failed): start one" >&2; exit 1; }
for img in "$IMAGE" localstack/localstack:4.13.1; do
  docker image inspect "$img" >/dev/null 2>&1 || { echo "error: the image $img is missing: run docker/images.sh (./dev images)" >&2; exit 1; }
done

# The configuration checks read YAML: PyYAML from the system's python3, or else from a cached
# virtualenv beside the emulators' (a fresh machine's python3 may not have it).
PYTHON=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
  venv="${TICKERLAKE_VENV:-$HOME/.cache/tickerlake-venv}/stack-test"
  if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check 'PyYAML>=6,<7' ||
      { echo "error: PyYAML is missing and could not be installed into $venv (pip install PyYAML)" >&2; exit 1; }
  fi
  PYTHON="$venv/bin/python"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export LOCALSTACK_PORT=$(free_port) TICKERLAKE_SERVE_PORT=$(free_port) GRAFANA_PORT=$(free_port)
export TICKERLAKE_SERVE_PASSWORD="stack-test-$RANDOM$RANDOM"
LOGS=$(mktemp)
cleanup() {
  compose --profile offline logs --no-color >"$LOGS" 2>&1 || true
  compose --profile offline down -v --remove-orphans >/dev/null 2>&1 || true
  if ((FAILS)); then echo "--- compose logs (last 60 lines) ---"; tail -n 60 "$LOGS"; fi
  rm -f "$LOGS"
}
trap cleanup EXIT

# --- 1. configuration -------------------------------------------------------------------------
echo "== compose configuration"
check "compose config validates compose.yaml (offline profile included)" compose --profile offline config -q
CONFIG=$(compose --profile offline config 2>/dev/null)
# Assertions on the resolved configuration; prints one FAIL line per broken expectation.
"$PYTHON" - "$CONFIG" <<'PY' || FAILS=$((FAILS + $?))
import os, sys, yaml
cfg = yaml.safe_load(sys.argv[1])
services = cfg["services"]
fails = 0
def check(what, ok):
    global fails
    print(("PASS " if ok else "FAIL ") + what)
    fails += 0 if ok else 1

for name, svc in services.items():
    for p in svc.get("ports", []):
        ip = p.get("host_ip") if isinstance(p, dict) else str(p).rsplit(":", 2)[0] if str(p).count(":") >= 2 else None
        check(f"{name}: port {p} is published on 127.0.0.1 only", ip == "127.0.0.1")
expected = {"localstack", "lake-init", "worker", "serve-cert", "serve", "grafana", "simulator", "backfill-offline", "worker-offline"}
check(f"services {sorted(expected)} are defined", expected <= set(services))
for name in ("localstack", "serve", "grafana", "simulator"):
    hc = services[name].get("healthcheck")
    # serve's health check is the image's (HEALTHCHECK in the Dockerfile)
    check(f"{name}: has a health check", bool(hc) or name == "serve")
deps = {n: s.get("depends_on", {}) for n, s in services.items()}
def cond(svc, dep):
    d = deps[svc]
    return d.get(dep, {}).get("condition") if isinstance(d, dict) else None
check("lake-init waits for a healthy localstack (bucket made)", cond("lake-init", "localstack") == "service_healthy")
for svc in ("worker", "serve"):
    check(f"{svc} starts after lake-init completed", cond(svc, "lake-init") == "service_completed_successfully")
check("serve starts after serve-cert wrote its certificate", cond("serve", "serve-cert") == "service_completed_successfully")
check("grafana waits for a healthy serve", cond("grafana", "serve") == "service_healthy")
check("worker-offline runs after the offline backfill", cond("worker-offline", "backfill-offline") == "service_completed_successfully")
named = set(cfg.get("volumes", {}))
def vols(svc):
    out = []
    for v in services[svc].get("volumes", []):
        if isinstance(v, dict):
            out.append((v.get("type"), v.get("source"), v.get("target"), v.get("read_only", False)))
        else:
            parts = v.split(":")
            out.append(("bind" if parts[0].startswith(("/", ".")) else "volume", parts[0], parts[1], len(parts) > 2 and "ro" in parts[2]))
    return out
for svc, target in (("localstack", "/var/lib/localstack"), ("worker", "/var/lib/tickerlake"), ("grafana", "/var/lib/grafana")):
    check(f"{svc}: data in a named volume at {target}", any(t == "volume" and s in named and d == target for t, s, d, _ in vols(svc)))
root = os.getcwd()
g = services["grafana"]
image = g["image"]
tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
check(f"grafana: image pinned ({image})", tag not in ("", "latest") and tag[0].isdigit())
gv = vols("grafana")
check("grafana: grafana/provisioning mounted read-only at /etc/grafana/provisioning",
      any(t == "bind" and os.path.realpath(s) == os.path.join(root, "grafana/provisioning") and d == "/etc/grafana/provisioning" and ro for t, s, d, ro in gv))
ds_target = "/etc/grafana/provisioning/datasources/tickerlake.yaml"
override = [s for t, s, d, ro in gv if d == ds_target]
check("grafana: the compose datasource file is mounted over the repository's", override == [os.path.join(root, "docker/grafana/datasources.yaml")] or [os.path.realpath(o) for o in override] == [os.path.join(root, "docker/grafana/datasources.yaml")])
genv = g.get("environment", {})
senv = services["serve"].get("environment", {})
check("grafana: TICKERLAKE_SERVE_PASSWORD is serve's (the datasource password)", genv.get("TICKERLAKE_SERVE_PASSWORD") == senv.get("TICKERLAKE_SERVE_PASSWORD") and bool(senv.get("TICKERLAKE_SERVE_PASSWORD")))
for var in ("AWS_REGION", "TICKERLAKE_GLUE_DATABASE", "TICKERLAKE_ATHENA_WORKGROUP", "TICKERLAKE_ATHENA_OUTPUT"):
    check(f"grafana: {var} is set for the Athena datasource's expansion", var in genv)
# The PostgreSQL datasource resolves to the serve service on the port serve listens on.
ds = yaml.safe_load(open("docker/grafana/datasources.yaml"))
pg = [d for d in ds["datasources"] if d["type"] == "grafana-postgresql-datasource"]
check("datasource: exactly one PostgreSQL datasource", len(pg) == 1)
host, _, port = pg[0]["url"].rpartition(":")
cmd = services["serve"]["command"]
listen = cmd[cmd.index("--listen") + 1] if "--listen" in cmd else senv.get("TICKERLAKE_SERVE_LISTEN", "127.0.0.1:5433")
check(f"datasource: url {pg[0]['url']} is the serve service on its listen port ({listen})", host == "serve" and host in services and listen.rsplit(":", 1)[1] == port)
check("serve listens beyond loopback only with a password", not listen.startswith("127.") and bool(senv.get("TICKERLAKE_SERVE_PASSWORD")))
check("datasource: password from $TICKERLAKE_SERVE_PASSWORD", pg[0].get("secureJsonData", {}).get("password") == "$TICKERLAKE_SERVE_PASSWORD")
# TLS: serve has a certificate; Grafana verifies it with the CA from the same volume.
jd = pg[0].get("jsonData", {})
check("datasource: sslmode verify-full with a CA file", jd.get("sslmode") == "verify-full" and jd.get("tlsConfigurationMethod") == "file-path")
check("serve: --tls-cert and --tls-key given", "--tls-cert" in cmd and "--tls-key" in cmd)
cert_dir = os.path.dirname(cmd[cmd.index("--tls-cert") + 1]) if "--tls-cert" in cmd else None
serve_tls = [s for t, s, d, _ in vols("serve") if d == cert_dir]
ca_dir = os.path.dirname(jd.get("sslRootCertFile", "/nowhere/x"))
check(f"grafana: the CA file {jd.get('sslRootCertFile')} comes from serve's certificate volume",
      bool(serve_tls) and any(s == serve_tls[0] and d == ca_dir for t, s, d, _ in gv))
cert_cmd = services["serve-cert"]["command"]
check("serve-cert: names the serve service (Grafana's host) and localhost", "serve" in cert_cmd and "localhost" in cert_cmd)
repo_ds = "grafana/provisioning/datasources/tickerlake.yaml"
if os.path.exists(repo_ds):
    mine = yaml.safe_load(open("docker/grafana/datasources.yaml"))
    theirs = yaml.safe_load(open(repo_ds))
    tls_keys = ("sslmode", "tlsConfigurationMethod", "sslRootCertFile")
    for d in mine["datasources"] + theirs["datasources"]:
        if d["type"] == "grafana-postgresql-datasource":
            d["url"] = None
            for k in tls_keys:
                d["jsonData"].pop(k, None)
    check(f"datasource: docker/grafana/datasources.yaml equals {repo_ds} but for the PostgreSQL url and TLS settings", mine == theirs)
    check("grafana: the dashboard provider file exists", os.path.exists("grafana/provisioning/dashboards/tickerlake.yaml"))
else:
    print(f"\n*** SKIPPED comparing the compose datasource file with {repo_ds}: grafana/provisioning is not in this checkout yet (issue 8) ***\n")
sys.exit(min(fails, 100))
PY

# --- 2. the stack, offline, without Grafana ---------------------------------------------------
echo "== compose up (offline profile, everything but Grafana)"
HAS_SERVE=1
docker run --rm "$IMAGE" serve --help >/dev/null 2>&1 || HAS_SERVE=0
SERVICES=(localstack lake-init simulator backfill-offline worker-offline)
((HAS_SERVE)) && SERVICES+=(serve)
t0=$SECONDS
if ! compose --profile offline up -d "${SERVICES[@]}" >"$LOGS.up" 2>&1; then
  cat "$LOGS.up"; rm -f "$LOGS.up"
  fail "compose up -d ${SERVICES[*]}"
  exit "$FAILS"
fi
rm -f "$LOGS.up"
pass "compose up -d ${SERVICES[*]} ($((SECONDS - t0)) s)"

health() { docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(compose ps -q "$1")" 2>/dev/null; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND…
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < deadline)) || { fail "$what (not within ${secs} s)"; return 1; }
    sleep 2
  done
  pass "$what"
}
is_healthy() { [[ $(health "$1") == healthy ]]; }
wait_for 120 "localstack is healthy (its init hook made the bucket)" is_healthy localstack

S3="http://127.0.0.1:$LOCALSTACK_PORT"
keys() { curl -sf "$S3/tickerlake?list-type=2&prefix=$1" | grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'; }
# The worker's first tick collects the current hour (a raw snapshot named after it) and processes.
hour_written() {
  local h
  for h in "$(date -u +%Y%m%dT%H)" "$(date -u -d '1 hour ago' +%Y%m%dT%H)"; do
    keys "lake/raw/raw_crypto_prices_$h" | grep -q . && keys "lake/processed/date=$(date -u +%Y-%m-%d)/" | grep -q '\.parquet$' && return 0
  done
  return 1
}
wait_for 240 "worker-offline wrote this hour's raw snapshot and today's processed partition into LocalStack's bucket" hour_written
# The 60-day backfill writes about 1,440 snapshots: one listing page (1,000 keys) must be full.
n_raw=$(keys lake/raw/ | wc -l)
((n_raw >= 1000)) && pass "the lake holds the backfill and the worker's snapshot (a full page of $n_raw raw files)" || fail "60 days backfilled (about 1,440 raw files) expected, found $n_raw"

if ((HAS_SERVE)); then
  wait_for 120 "serve is healthy (accepts connections)" is_healthy serve
  CA=$(mktemp)
  compose exec -T serve cat /var/lib/tickerlake/tls/ca.pem >"$CA" 2>/dev/null && grep -q 'BEGIN CERTIFICATE' "$CA" \
    && pass "serve-cert wrote the stack's CA" || fail "no CA at /var/lib/tickerlake/tls/ca.pem in serve"
  PSQL_URL="postgresql://tickerlake:$TICKERLAKE_SERVE_PASSWORD@localhost:$TICKERLAKE_SERVE_PORT/tickerlake?sslmode=verify-full&sslrootcert=$CA"
  conninfo=$(psql "$PSQL_URL" -XAtc '\conninfo' 2>&1)
  [[ $conninfo == *"SSL connection"* ]] && pass "psql reaches serve over TLS, verifying its certificate (verify-full)" || fail "TLS with verify-full: $conninfo"
  rows=$(psql "$PSQL_URL" -XAtc 'SELECT count(*) FROM processed' 2>&1)
  [[ $rows =~ ^[0-9]+$ ]] && ((rows > 0)) && pass "serve answers psql: $rows processed rows" || fail "psql through serve: $rows"
  bad=$(psql "postgresql://tickerlake:wrong@127.0.0.1:$TICKERLAKE_SERVE_PORT/tickerlake" -XAtc 'SELECT 1' 2>&1) \
    && fail "serve accepted a wrong password" || pass "serve refuses a wrong password (${bad%%$'\n'*})"
  # Every dashboard panel and variable query, with the PostgreSQL datasource's expansion of the
  # macros over the last 7 days and the first symbol.
  symbol=$(psql "$PSQL_URL" -XAtc 'SELECT DISTINCT symbol FROM processed ORDER BY symbol LIMIT 1' 2>/dev/null)
  from=$(date -u -d '7 days ago' +%Y-%m-%dT%H:%M:%SZ) to=$(date -u -d '1 hour' +%Y-%m-%dT%H:%M:%SZ)
  shopt -s nullglob
  n_dash=0
  for f in queries/*.sql; do
    grep -qE '^-- (dashboard|variable):' "$f" || continue
    n_dash=$((n_dash + 1))
    sql=$(grep -v '^--' "$f" | python3 -c '
import re, sys
sql, frm, to, sym = sys.stdin.read(), sys.argv[1], sys.argv[2], sys.argv[3]
sql = re.sub(r"\$__timeFilter\(([^)]*)\)", lambda m: f"{m.group(1)} BETWEEN {chr(39)}{frm}{chr(39)} AND {chr(39)}{to}{chr(39)}", sql)
sql = sql.replace("$__timeFrom()", f"{chr(39)}{frm}{chr(39)}").replace("$__timeTo()", f"{chr(39)}{to}{chr(39)}")
sql = sql.replace("${symbol:sqlstring}", f"{chr(39)}{sym}{chr(39)}")
left = re.findall(r"\$\{?\w+", sql)
if left: sys.exit("unexpanded macro(s) " + " ".join(left))
print(sql)' "$from" "$to" "$symbol") || { fail "$f: $sql"; continue; }
    out=$(psql "$PSQL_URL" -XAt -c "$sql" 2>&1) || { fail "$f through serve: ${out%%$'\n'*}"; continue; }
    nrows=$(grep -c . <<<"$out")
    if ((nrows > 0)); then
      pass "$f through serve: $nrows row(s)"
    elif [[ $f == *quarantine* ]]; then
      pass "$f through serve: no rows (the simulator writes no rows to quarantine)"
    else
      fail "$f through serve returned no rows"
    fi
  done
  ((n_dash > 0)) || skip "dashboard queries through serve: no queries/*.sql with a '-- dashboard:' line in this checkout yet (issue 8)"
else
  skip "serve checks: the image's tickerlake has no \`serve\` subcommand yet (issue 8 not merged); compose.yaml's serve service was checked by configuration only"
fi

# --- 3. the init hook on restart ----------------------------------------------------------------
echo "== LocalStack restart: the init hook again"
compose restart localstack >/dev/null 2>&1
sleep 3
wait_for 120 "localstack healthy again after a restart (bucket present)" is_healthy localstack
hooks=$(compose logs --no-color localstack 2>&1 | grep -c 'tickerlake init hook:')
((hooks >= 2)) && pass "the init hook ran on each start ($hooks times) without failing" || fail "the init hook ran $hooks time(s), expected 2"
compose logs --no-color localstack 2>&1 | grep -qiE 'returned a non-zero exit code|Error while running script' \
  && fail "LocalStack reports a failing init script" || pass "no failing init script in LocalStack's logs"

echo "== $FAILS failure(s)"
exit "$FAILS"
