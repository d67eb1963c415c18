"""Griffe extension for scripts/docs.sh: reads fastpoplib's docstrings, written for `help()`
with a few reStructuredText habits, as the Markdown that mkdocstrings renders.

- roles such as :class:`~fastpoplib.testing.Fault` or :meth:`stop` become code spans
  (the last component when the target starts with ``~``);
- a paragraph ending in ``::`` followed by an indented block becomes a paragraph ending in
  ``:`` followed by a fenced Python code block (every such block in fastpoplib is Python).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _literal_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        head = line.rstrip()[:-1]  # "Example::" -> "Example:"
        j = i + 1
        block: list[str] = []
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        if not any(b.strip() for b in block):
            out.append(line)
            i += 1
            continue
        # Under a Google-style section title ("Example:"), the block stays indented: it is the
        # section's body. Anywhere else it starts at the paragraph's indentation, since an
        # indented fence would be a Markdown code block showing the fence itself.
        section = head.strip() in ("Example:", "Examples:")
        pad = " " * (indent + 4 if section else indent)
        code = textwrap.dedent("\n".join(block)).strip("\n")
        out.append(head)
        out.append("")
        out.append(f"{pad}```python")
        out.extend(f"{pad}{c}" if c else "" for c in code.split("\n"))
        out.append(f"{pad}```")
        out.append("")
        i = j
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrites each docstring once, when griffe creates the object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _literal_blocks(_ROLE.sub(_role, obj.docstring.value))
