#!/usr/bin/env bash
# How well fastpoplib is typed, from a user's point of view:
#   1. mypy.stubtest over the whole package: stubs and annotations agree with the runtime
#      objects (for _core, the hand-written _core.pyi against the compiled extension);
#   2. pyright --verifytypes fastpoplib: the share of public symbols whose type is fully
#      known, printed as "type completeness score: N %", with every incomplete symbol.
# Both run against fastpoplib INSTALLED (not editable: pyright's verifytypes needs it in
# site-packages) in $TYPECHECK_VENV (.venv-typecheck), with the tools of
# requirements/typecheck.txt.
#
#   bash scripts/typecheck.sh [--wheel FILE] [--min-score PERCENT]
#
# --wheel installs that wheel (e.g. the one scripts/build-dist.sh made) instead of building the
# checkout with pip. The exit status is non-zero when stubtest fails, or when --min-score is
# given and the score is below it; without --min-score the score is only reported.
# The full reports are left in target/typecheck/.
set -euo pipefail
cd "$(dirname "$0")/.."

wheel=""
min_score=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) wheel="$(realpath "$2")"; shift 2 ;;
        --min-score) min_score="$2"; shift 2 ;;
        *) echo "usage: $0 [--wheel FILE] [--min-score PERCENT]" >&2; exit 2 ;;
    esac
done

VENV="${TYPECHECK_VENV:-.venv-typecheck}"
REPORTS=target/typecheck
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
VENV="$(realpath "$VENV")"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements/typecheck.txt
# --force-reinstall: the same version number must not keep an older build in place.
"$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "${wheel:-.}"
mkdir -p "$REPORTS"
REPORTS="$(realpath "$REPORTS")"

# Run from an empty directory so that only the installed package can be found.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"

status=0
echo "== mypy.stubtest fastpoplib (report: $REPORTS/stubtest.txt)"
if "$VENV/bin/python" -m mypy.stubtest fastpoplib >"$REPORTS/stubtest.txt" 2>&1; then
    echo "stubtest: OK"
else
    status=1
    echo "stubtest: FAILED ($(grep -c ': error:' "$REPORTS/stubtest.txt" || true) errors):"
    head -n 40 "$REPORTS/stubtest.txt"
fi

echo "== pyright --verifytypes fastpoplib (report: $REPORTS/verifytypes.txt)"
# pyright finds the package through the Python of the active environment.
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"
pyright --verifytypes fastpoplib --ignoreexternal >"$REPORTS/verifytypes.txt" 2>&1 || true
pyright --verifytypes fastpoplib --ignoreexternal --outputjson >"$REPORTS/verifytypes.json" 2>/dev/null || true
score=$("$VENV/bin/python" - "$REPORTS/verifytypes.json" <<'PY'
import collections
import json
import sys

report = json.load(open(sys.argv[1]))["typeCompleteness"]
if not report.get("pyTypedPath"):
    sys.exit("pyright did not find fastpoplib's py.typed: is the package installed?")
counts = report["exportedSymbolCounts"]
incomplete = [s for s in report["symbols"] if s["isExported"] and not s["isTypeKnown"]]
by_module = collections.Counter(s["name"].rsplit(".", 1)[0] for s in incomplete)
print(f"exported symbols: {counts['withKnownType']} known, {counts['withAmbiguousType']} ambiguous, "
      f"{counts['withUnknownType']} unknown", file=sys.stderr)
for name in sorted(s["name"] for s in incomplete):
    print(f"  not fully typed: {name}", file=sys.stderr)
if by_module:
    print("  per class/module: " + ", ".join(f"{m} {n}" for m, n in by_module.most_common()), file=sys.stderr)
print(f"{report['completenessScore'] * 100:.1f}")
PY
)
echo "type completeness score: $score %"
if [ -n "$min_score" ]; then
    if "$VENV/bin/python" -c "import sys; sys.exit(not float(sys.argv[1]) >= float(sys.argv[2]))" "$score" "$min_score"; then
        echo "score $score % >= $min_score %: OK"
    else
        echo "score $score % is below the required $min_score %" >&2
        status=1
    fi
fi
exit "$status"
