#!/usr/bin/env bash
# Load comparison of the example service with the cache on (Redis) and off.
#
#   scripts/load.sh                                   # SQLite, about a minute
#   DATABASE_URL=postgres://user:pw@host/db scripts/load.sh
#   DURATION=30 CONCURRENCY=64 scripts/load.sh
#
# Builds the service and the load generator in release mode, starts its own
# redis-server on a free loopback port (never 6379), then runs the service
# twice on the same database: with REDIS_URL set (cache on), and with
# CACHE_DISABLED=true (every request queries the database). Each run is
# warmed for WARMUP seconds, then measured for DURATION seconds with
# examples/load.rs (80% user profiles, 15% posts pages, 4% dashboard, 1%
# profile updates). Prints a markdown table. Every process it starts is
# stopped on exit, whatever happens.
#
# The service, Redis and the load generator share the machine's cores: the
# figures compare the two runs, they are not the service's capacity.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CONCURRENCY=${CONCURRENCY:-32}
HOT=${HOT:-200}
SEED_USERS=${SEED_USERS:-1000}

for tool in redis-server redis-cli curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "load.sh needs $tool" >&2; exit 1; }
done

echo "building (release)..." >&2
cargo build --release --quiet --example service --example load
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-target}/release/examples"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cache-load.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on (49152-65535, skipping 6379 by range).
free_port() {
    local port
    while :; do
        port=$((49152 + (RANDOM * 32768 + RANDOM) % 16383))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

# Waits until `cmd...` succeeds, for at most $1 seconds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_for 10 redis-cli -p "$redis_port" ping || { cat "$tmp/redis.log" >&2; exit 1; }
echo "redis-server on 127.0.0.1:$redis_port" >&2

if [[ "${DATABASE_URL:-}" == postgres* ]]; then
    database="Postgres"
else
    # A fresh SQLite file for this comparison, seeded by the first run.
    unset DATABASE_URL
    export SERVICE_DATA_DIR="$tmp"
    database="SQLite"
fi
export SEED_USERS

rows=()
hit_ratio="n/a"

# run_case LABEL VAR=VALUE...: starts the service with the given variables,
# warms it, measures it, stops it; appends a table row.
run_case() {
    local label=$1
    shift
    local port pid url row
    port=$(free_port)
    url="http://127.0.0.1:$port"
    env "$@" LISTEN="127.0.0.1:$port" RUST_LOG="${RUST_LOG:-warn}" \
        "$bin/service" >"$tmp/service-$port.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    # Seeding the database on the first start takes a moment.
    if ! wait_for 120 curl -sf "$url/users/1"; then
        echo "the service did not start:" >&2
        cat "$tmp/service-$port.log" >&2
        exit 1
    fi
    echo "== $label: warming ${WARMUP}s, measuring ${DURATION}s at concurrency $CONCURRENCY" >&2
    "$bin/load" --url "$url" --concurrency "$CONCURRENCY" --duration "$WARMUP" \
        --hot "$HOT" --seed 7 >/dev/null
    row=$("$bin/load" --url "$url" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --hot "$HOT" --row "$label" | tail -n 1)
    if [[ "$*" == *REDIS_URL=* ]] && command -v jq >/dev/null 2>&1; then
        hit_ratio=$(curl -sf "$url/cache/stats" | jq -r '.hit_ratio') || hit_ratio="n/a"
    fi
    rows+=("$row")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

run_case "cache on (Redis)" REDIS_URL="redis://127.0.0.1:$redis_port" \
    CACHE_NAMESPACE="load$$"
run_case "cache off" CACHE_DISABLED=true

echo
echo "$database, $SEED_USERS users x 20 posts, hot set $HOT users, concurrency $CONCURRENCY, ${DURATION}s per run, $(nproc) cores shared by service, Redis and load generator"
echo
echo "| run | req/s | p50 ms | p99 ms | max ms | errors |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
if [[ "$hit_ratio" != "n/a" ]]; then
    echo
    printf 'cache hit ratio during the cache-on run (warm-up included): %.3f\n' "$hit_ratio"
fi
