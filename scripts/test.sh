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

cargo test --workspace --all-features "$@"
