#!/usr/bin/env bash
# Install the wheel that scripts/build-dist.sh left in dist/ into fresh virtualenvs of the oldest
# and the newest supported CPython (3.9 and 3.13), and run a smoke session in each against the
# shipped test server (scripts/smoke_wheel.py): proof that the one abi3 wheel really works on
# both ends of the range, installed as a user would install it.
#
# Interpreters: $PYTHON39 / $PYTHON313 if set, else pythonX.Y on PATH, else pyenv's
# (`pyenv prefix`, or ~/.pyenv/versions/X.Y.*). A missing one is installed with
# `pyenv install` when pyenv is there; otherwise the script stops and says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

shopt -s nullglob
wheels=(dist/*-cp39-abi3-*.whl)
shopt -u nullglob
if [ "${#wheels[@]}" -ne 1 ]; then
    echo "smoke-wheel: expected one abi3 wheel in dist/ (run scripts/build-dist.sh first), found ${#wheels[@]}" >&2
    exit 2
fi
wheel="$PWD/${wheels[0]}"
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"

runs_version() {  # $1 = interpreter, $2 = X.Y: true when it runs and is CPython X.Y
    [ -x "$1" ] && [ "$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$2" ]
}

find_python() {  # $1 = X.Y; prints the path of a working CPython X.Y, or nothing
    local version="$1" var="PYTHON${1//./}" candidate
    local -a candidates=()
    if [ -n "${!var:-}" ]; then  # set explicitly: that one or none
        runs_version "${!var}" "$version" && echo "${!var}"
        return 0
    fi
    candidates+=("$(command -v "python$version" || true)")  # may be a pyenv shim that refuses
    if command -v pyenv >/dev/null; then
        candidates+=("$(pyenv prefix "$version" 2>/dev/null || true)/bin/python$version")
    fi
    # The newest X.Y.* under pyenv's root, whether or not pyenv is on PATH.
    candidates+=("$(find "$PYENV_ROOT/versions" -maxdepth 3 -path "*/versions/$version.*/bin/python$version" 2>/dev/null | sort -V | tail -n 1)")
    for candidate in "${candidates[@]}"; do
        if [ -n "$candidate" ] && runs_version "$candidate" "$version"; then
            echo "$candidate"
            return 0
        fi
    done
    return 0
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for version in 3.9 3.13; do
    python=$(find_python "$version")
    var="PYTHON${version//./}"
    if [ -z "$python" ] && [ -z "${!var:-}" ] && command -v pyenv >/dev/null; then
        echo "smoke-wheel: no Python $version; trying: pyenv install --skip-existing $version"
        pyenv install --skip-existing "$version" || true
        python=$(find_python "$version")
    fi
    if [ -z "$python" ]; then
        echo "smoke-wheel: no working Python $version (looked at \$PYTHON${version//./}, python$version on PATH and $PYENV_ROOT/versions)." >&2
        echo "smoke-wheel: install it (e.g. 'pyenv install $version') or point PYTHON${version//./} at it." >&2
        exit 2
    fi
    start=$(date +%s)
    "$python" -m venv "$tmp/venv-$version"
    "$tmp/venv-$version/bin/python" -m pip install --quiet --disable-pip-version-check --no-index "$wheel"
    # From a directory outside the checkout, so nothing but the installed wheel can be imported.
    (cd "$tmp" && "$tmp/venv-$version/bin/python" -I "$OLDPWD/scripts/smoke_wheel.py")
    echo "smoke-wheel: Python $version ($python) passed in $(( $(date +%s) - start )) s"
done
