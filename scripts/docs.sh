#!/usr/bin/env bash
# Build the HTML documentation into site/: the pages in docs/ and an API reference generated
# from the docstrings (mkdocs-material + mkdocstrings; configuration in mkdocs.yml).
# `mkdocs build --strict`: any warning (a broken link, a docstring griffe cannot parse, a
# missing page) fails the build. The docstrings are read from the sources (python/), so
# neither Rust nor an installed fastpoplib is needed. Tools are pinned in
# requirements/docs.txt and installed into $DOCS_VENV (.venv-docs).
#
#   bash scripts/docs.sh            # build into site/
#   bash scripts/docs.sh serve      # live preview on http://127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${DOCS_VENV:-.venv-docs}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements/docs.txt

export NO_MKDOCS_2_WARNING=1  # material's notice about its successor: not about our docs
if [ "${1:-}" = "serve" ]; then
    exec "$VENV/bin/mkdocs" serve --strict --dev-addr 127.0.0.1:8000
fi
start=$(date +%s)
"$VENV/bin/mkdocs" build --strict --clean
test -s site/index.html && test -s site/reference/fastpoplib/index.html
echo "docs: built site/ in $(( $(date +%s) - start )) s ($(find site -name '*.html' | wc -l) HTML files)"
