#!/usr/bin/env bash
# Compile cost of #[cached], per function: builds benches/compile_cost (50
# typical service functions) bare, with the runtime linked but no attribute
# (`runtime`: the fixed cost of the dependency), and with the attribute
# (`cached`), in release and debug, and prints the CPU time (user + sys) of
# compiling that crate alone (its dependencies are built first and not
# counted) and the binary size. Per function: (cached - bare) / 50, which
# spreads the runtime's fixed cost over the 50 functions (the issue's
# measure), and (cached - runtime) / 50, the marginal cost of one more
# cached function. Also a debug edit loop: one body edited, rebuilt.
#
#   scripts/compile_cost.sh            # prints a table; 3-6 min on 2 cores once the dependencies are built
#
# Each figure is the median of ROUNDS (default 3) builds.
set -euo pipefail
cd "$(dirname "$0")/../benches/compile_cost"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../../target/compile-cost}"
ROUNDS="${ROUNDS:-3}"
FUNCTIONS=50

cpu_of() { # cargo args...: CPU seconds of rebuilding this crate only
    touch src/main.rs
    local out
    out=$( { /usr/bin/time -f "%U %S" cargo build --quiet "$@" >/dev/null; } 2>&1 | tail -1)
    awk '{ printf "%.2f", $1 + $2 }' <<<"$out"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

measure() { # profile feature-args...
    local profile=$1; shift
    local flag=()
    [[ $profile == release ]] && flag=(--release)
    cargo build --quiet "${flag[@]}" "$@" # dependencies, not counted
    for _ in $(seq "$ROUNDS"); do cpu_of "${flag[@]}" "$@"; echo; done | median
}

size_of() { # profile
    stat -c %s "$CARGO_TARGET_DIR/$1/compile-cost"
}

edit_loop() { # feature-args...: CPU of a debug rebuild after editing one body
    cargo build --quiet "$@"
    for i in $(seq "$ROUNDS"); do
        sed -i "s/db.row(id + 0).await/db.row(id + 0 + $i - $i).await/" src/main.rs
        local t
        t=$( { /usr/bin/time -f "%U %S" cargo build --quiet "$@" >/dev/null; } 2>&1 | tail -1)
        sed -i "s/db.row(id + 0 + $i - $i).await/db.row(id + 0).await/" src/main.rs
        awk '{ printf "%.2f\n", $1 + $2 }' <<<"$t"
    done | median
}

declare -A cpu size
for profile in release debug; do
    cpu[$profile,bare]=$(measure $profile)
    size[$profile,bare]=$(size_of $profile)
    cpu[$profile,runtime]=$(measure $profile --features runtime)
    size[$profile,runtime]=$(size_of $profile)
    cpu[$profile,cached]=$(measure $profile --features cached)
    size[$profile,cached]=$(size_of $profile)
done
edit_bare=$(edit_loop)
edit_cached=$(edit_loop --features cached)

printf "%-8s %8s %8s %8s %10s %10s %11s %11s %11s %10s %10s\n" profile "cpu bare" "runtime" "cached" "cpu/fn" "marginal" "bin bare" "runtime" "cached" "bin/fn" "marginal"
for profile in release debug; do
    awk -v p=$profile -v cb="${cpu[$profile,bare]}" -v cr="${cpu[$profile,runtime]}" -v cc="${cpu[$profile,cached]}" \
        -v sb="${size[$profile,bare]}" -v sr="${size[$profile,runtime]}" -v sc="${size[$profile,cached]}" -v n=$FUNCTIONS \
        'BEGIN { printf "%-8s %8.2f %8.2f %8.2f %10.3f %10.3f %11d %11d %11d %10d %10d\n", p, cb, cr, cc, (cc - cb) / n, (cc - cr) / n, sb, sr, sc, (sc - sb) / n, (sc - sr) / n }'
done
echo "(CPU in seconds of compiling the workload crate alone; binary sizes in bytes; per function over $FUNCTIONS functions)"
echo "debug edit loop (one body edited, rebuilt): bare ${edit_bare} s CPU, cached ${edit_cached} s CPU"
