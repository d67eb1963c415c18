#!/usr/bin/env bash
# Build the release artefacts into dist/ and check them:
#   - the sdist;
#   - one x86_64 Linux wheel, tagged cp39-abi3 (every CPython >= 3.9) and manylinux2014
#     (glibc >= 2.17), linked with zig (from the ziglang package on PyPI) against glibc 2.17
#     symbols, so no manylinux container is needed. The wheel is built FROM the sdist, which
#     proves the sdist is complete.
# Checks: `auditwheel show` must report manylinux_2_17 (it reads the symbol versions the
# extension really needs), the wheel must be cp39-abi3, LICENSE must be inside the wheel and
# the sdist, and `twine check --strict` must accept both (the README renders on PyPI).
#
# Tools are pinned in requirements/dist.txt and installed into $DIST_VENV (.venv-dist).
# Cargo output goes to $CARGO_TARGET_DIR (target/dist unless set): a release build with LTO
# takes several minutes on two cores; later runs only rebuild the crate itself.
#
# `bash scripts/build-dist.sh --check-only` re-runs the checks on what dist/ already holds.
set -euo pipefail
cd "$(dirname "$0")/.."

check_only=false
case "${1:-}" in
    --check-only) check_only=true ;;
    "") ;;
    *) echo "usage: $0 [--check-only]" >&2; exit 2 ;;
esac

VENV="${DIST_VENV:-.venv-dist}"
OUT=dist
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/dist}"
TARGET=x86_64-unknown-linux-gnu

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "build-dist.sh builds the x86_64 Linux wheel; this is $(uname -s)-$(uname -m)" >&2
    exit 2
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements/dist.txt
# maturin finds zig as `python -m ziglang` of the Python running it; make that the venv's.
export PATH="$PWD/$VENV/bin:$PATH"

if ! $check_only; then
    rm -rf "$OUT"
    mkdir -p "$OUT"
    start=$(date +%s)
    maturin build --release --locked --sdist --out "$OUT" \
        --target "$TARGET" --zig --compatibility manylinux2014 --auditwheel check
    echo "build-dist: built in $(( $(date +%s) - start )) s"
fi

shopt -s nullglob
sdists=("$OUT"/*.tar.gz)
wheels=("$OUT"/*.whl)
shopt -u nullglob
fail() { echo "build-dist: FAILED: $*" >&2; exit 1; }
[ "${#sdists[@]}" -eq 1 ] || fail "expected one sdist in $OUT, found ${#sdists[@]}"
[ "${#wheels[@]}" -eq 1 ] || fail "expected one wheel in $OUT, found ${#wheels[@]}"
sdist="${sdists[0]}"
wheel="${wheels[0]}"

case "$(basename "$wheel")" in
    *-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl | *-cp39-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl) ;;
    *) fail "wheel is not tagged cp39-abi3 manylinux2014/manylinux_2_17 x86_64: $(basename "$wheel")" ;;
esac

# auditwheel decides from the ELF file itself (versioned glibc symbols, linked libraries),
# not from the file name: it must find the wheel consistent with manylinux_2_17.
# auditwheel wraps its lines: compare with the whitespace squeezed to single spaces.
audit=$("$VENV/bin/auditwheel" show "$wheel")
echo "$audit"
audit_flat=$(tr -s ' \n' '  ' <<<"$audit")
grep -qF 'consistent with the following platform tag: "manylinux_2_17_x86_64"' <<<"$audit_flat" \
    || fail "auditwheel does not find the wheel consistent with manylinux_2_17_x86_64"

"$VENV/bin/python" - "$wheel" "$sdist" <<'PY'
import sys
import tarfile
import zipfile

wheel, sdist = sys.argv[1], sys.argv[2]
license_text = open("LICENSE", "rb").read()
with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert licenses, f"no LICENSE in {wheel}"
    assert zf.read(licenses[0]) == license_text, "the wheel's LICENSE differs from ./LICENSE"
    for needed in ("fastpoplib/py.typed", "fastpoplib/_core.pyi", "fastpoplib/testing/server/__init__.py"):
        assert needed in names, f"{needed} missing from {wheel}"
    cores = [n for n in names if n.startswith("fastpoplib/_core.") and n.endswith(".so")]
    assert cores == ["fastpoplib/_core.abi3.so"], f"unexpected extension files: {cores}"
    metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for field in ("License-Expression: MIT", "License-File: LICENSE", "Project-URL: Source,"):
        assert field in metadata, f"METADATA lacks {field!r}"
with tarfile.open(sdist) as tf:
    members = tf.getnames()
    top = members[0].split("/")[0]
    for needed in ("LICENSE", "README.md", "pyproject.toml", "Cargo.toml", "Cargo.lock"):
        assert f"{top}/{needed}" in members, f"{needed} missing from {sdist}"
print(f"build-dist: contents checked ({len(names)} files in the wheel, {len(members)} in the sdist)")
PY

"$VENV/bin/twine" check --strict "$sdist" "$wheel"
ls -l "$OUT"
echo "build-dist: OK: $(basename "$sdist") $(basename "$wheel")"
