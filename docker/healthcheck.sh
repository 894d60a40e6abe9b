#!/bin/bash
# The image's HEALTHCHECK. For `tickerlake serve` (PID 1 of the container): the port it listens on
# accepts TCP connections (--listen ADDR:PORT, else TICKERLAKE_SERVE_LISTEN, else port 5433).
# For any other command (the hourly worker): healthy while it runs, which Docker already knows.
set -u
read -r -d '' -a argv < <(tr '\0' '\n' </proc/1/cmdline) || true
is_serve=0 listen="${TICKERLAKE_SERVE_LISTEN:-127.0.0.1:5433}"
for ((i = 0; i < ${#argv[@]}; i++)); do
  case "${argv[i]}" in
    serve) is_serve=1 ;;
    --listen) listen="${argv[i + 1]:-$listen}" ;;
    --listen=*) listen="${argv[i]#--listen=}" ;;
  esac
done
[[ $is_serve == 1 ]] || exit 0
port="${listen##*:}" host="${listen%:*}"
[[ $host == 0.0.0.0 || $host == "[::]" || -z $host ]] && host=127.0.0.1
host="${host#[}" host="${host%]}"
exec 3<>"/dev/tcp/$host/$port" || { echo "tickerlake serve does not accept connections on $host:$port"; exit 1; }
