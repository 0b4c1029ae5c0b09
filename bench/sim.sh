#!/usr/bin/env bash
# Emulator throughput: wrk (2 threads, 64 keep-alive connections) with a mix of validation
# errors, generations, fetches and status-page reads. Needs target/release/modelslab-sentinel, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/modelslab-sentinel
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" sim --listen "127.0.0.1:$PORT" 2>/dev/null &
SIM=$!
trap 'kill $SIM 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/_sim/stats" >/dev/null && break; sleep 0.05; done
wrk -t2 -c64 -d"${SECONDS_:-10}"s --latency -s bench/sim-mix.lua "http://127.0.0.1:$PORT" | grep -E 'Requests/sec|Latency|99%|Non-2xx'
