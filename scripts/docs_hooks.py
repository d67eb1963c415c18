"""MkDocs hooks for scripts/docs.sh.

docs/*.md are also read on GitHub, where a link like ``../bench/results/dovecot.png`` reaches
a file outside docs/. For the HTML site, such a link to an image becomes a copy of the image in
the site; a link to anything else becomes an absolute link to the file in the repository (a
placeholder address, the one of pyproject.toml's [project.urls]). A link to a file that does not
exist is left alone, so MkDocs reports it and the strict build fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPOSITORY = "https://github.com/fastpoplib/fastpoplib/blob/main/"
ROOT = Path(__file__).resolve().parent.parent
IMAGES = (".png", ".svg", ".jpg", ".jpeg", ".gif")
_OUTSIDE = re.compile(r"(\]\()\.\./([^)\s#]+)")
_copied: set[str] = set()


def _targets(markdown: str) -> list[str]:
    return [m.group(2) for m in _OUTSIDE.finditer(markdown)]


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    # Every image outside docs/ that a page links to is added to the site under its own path.
    for page in [f for f in files if f.src_uri.endswith(".md") and f.abs_src_path]:
        for target in _targets(Path(page.abs_src_path).read_text(encoding="utf-8")):
            source = ROOT / target
            if target.endswith(IMAGES) and source.is_file() and target not in _copied:
                files.append(File.generated(config, target, abs_src_path=str(source)))
                _copied.add(target)
    return files


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    depth = page.file.src_uri.count("/")  # pages below docs/ link one level further up

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(2)
        if depth or not (ROOT / target).exists():
            return match.group(0)
        if target in _copied:
            return f"{match.group(1)}{target}"
        return f"{match.group(1)}{REPOSITORY}{target}"

    return _OUTSIDE.sub(rewrite, markdown)
