#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 20) on the stable toolchain (-s none: no
# sanitizer, which would need nightly). Exits non-zero on the first crash.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in status_and_body greeting capa session; do
    mkdir -p "corpus/$target"
    echo "fuzzing $target for ${seconds}s"
    # libFuzzer logs every new input; keep the end (stats, or the crash and its input). The
    # pipeline still fails when cargo fuzz does (pipefail). -timeout: an input that takes
    # seconds is a finding too (CVE-2018-1060 was a slow regex, not a crash).
    cargo fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=65536 2>&1 | tail -n 25
done
