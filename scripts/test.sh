#!/usr/bin/env bash
# The whole test suite: Rust core tests, then the Python suites (test server + Dovecot) against
# a freshly built and installed fastpoplib. Works on a fresh machine with Rust and Python 3.9+.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet ".[test]"

# House rules first: formatting, lints (warnings are errors), then the sans-IO core's tests,
# which build without tokio, rustls or sockets (the `net` feature) to prove it needs none.
cargo fmt --check
cargo clippy --quiet --all-targets -- -D warnings
"$VENV/bin/python" -m pip install --quiet "ruff>=0.6"
"$VENV/bin/ruff" check .
cargo test --no-default-features --quiet

# A short bounded fuzz run of the sans-IO core (fuzz/README.md): always in CI, elsewhere when
# FUZZ_SECONDS is set (the first run installs cargo-fuzz).
if [ "${CI:-}" = "true" ] || [ -n "${FUZZ_SECONDS:-}" ]; then
    bash fuzz/run.sh "${FUZZ_SECONDS:-20}"
fi

# Exit code 5 means pytest collected nothing: for us that is a broken suite, not a pass.
status=0
"$VENV/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: the suite is broken" >&2
fi
exit "$status"
