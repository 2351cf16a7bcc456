#!/usr/bin/env bash
# Runs every fuzz target (or those in $FUZZ_TARGETS) for SECONDS each and prints, per target, the executions and
# the findings (crash/timeout/leak/OOM inputs saved under fuzz/artifacts/TARGET/). Exit 0 = no findings,
# 1 = findings, 2 = build failure.
#
# Tool: cargo-fuzz (libFuzzer) on the stable toolchain. cargo-fuzz passes `-Z` flags to rustc; RUSTC_BOOTSTRAP=1
# lets stable accept them. Install once with `cargo install cargo-fuzz --locked`.
# Knobs: FUZZ_SANITIZER (default address, cargo-fuzz's own default, which covers the unsafe code in
# dependencies; `none` runs faster but needs a full rebuild), FUZZ_TARGETS (e.g. "pop3_command pop3_stream").
set -u
secs=${1:-60}
case $secs in '' | *[!0-9]*) echo "usage: fuzz/run.sh SECONDS" >&2; exit 2 ;; esac
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
# Keep the instrumented build apart from the main build's target dir.
unset CARGO_TARGET_DIR
san=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
echo "building fuzz targets (sanitizer: $san)..."
mkdir -p artifacts
if ! cargo fuzz build --sanitizer "$san" >artifacts/build.log 2>&1; then
    tail -40 artifacts/build.log >&2
    exit 2
fi

# Inputs longer than the limit each target probes (8 KB command lines, 12 KB status lines, the 16 KB read buffer).
max_len() {
    case $1 in
        pop3_command) echo 9000 ;;
        pop3_response) echo 13000 ;;
        pop3_stream) echo 40000 ;;
        rules_load) echo 65536 ;; # the default rule files (seeds) are up to ~40 KB
        *) echo 4096 ;;
    esac
}

printf '%-16s %12s %10s %8s %8s\n' target executions exec/s corpus findings
passed=0 failed=0
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="artifacts/$t.log"
    touch "$log.start"
    # `corpus/$t` grows across runs (not committed); `seeds/$t` are the committed starting points.
    cargo fuzz run --sanitizer "$san" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
    rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log" | tail -1)
    corp=$(find "corpus/$t" -type f | wc -l)
    found=$(($(find "artifacts/$t" -type f | wc -l) - before))
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then found=1; fi
    printf '%-16s %12s %10s %8s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$corp" "$found"
    if [ "$found" -gt 0 ]; then
        failed=$((failed + 1))
        grep -m3 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | sed 's/^/    /'
        find "artifacts/$t" -type f -newer "$log.start" 2>/dev/null | sed 's/^/    artifact: fuzz\//'
    else
        passed=$((passed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
