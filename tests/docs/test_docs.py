"""The documentation pages (docs/*.md) agree with the code they describe.

The HTML build (scripts/docs.sh, `mkdocs build --strict`) catches broken links and docstrings
it cannot parse; these tests catch prose that drifted from the code: a CLI option, exit code,
method, attribute, fault or fixture that the pages name but the code does not have, and code
examples that are not valid Python.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import fastpoplib
import pytest
from fastpoplib import _retriever
from fastpoplib.testing import Fault, POP3TestServer, Session, pytest_plugin

TESTS = Path(__file__).resolve().parents[1]
DOCS = TESTS.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_pages_exist() -> None:
    names = {p.name for p in PAGES}
    for needed in ("index.md", "quickstart.md", "migrating.md", "asyncio.md", "cli.md", "testing.md", "security.md", "benchmarks.md"):
        assert needed in names


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_python_examples_compile(path: Path) -> None:
    for number, code in enumerate(python_blocks(path.read_text(encoding="utf-8")), start=1):
        try:  # top-level await is allowed: the Jupyter examples use it
            compile(code, f"{path.name}, python block {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"{path.name}, python block {number}: {exc}")


def cli_options() -> set[str]:
    options: set[str] = set()
    for command in ([], ["fetch"], ["watch"], ["status"], ["ls"], ["serve"], ["demo"]):
        result = subprocess.run(
            [sys.executable, "-m", "fastpoplib", *command, "--help"], check=True, capture_output=True, text=True, timeout=60
        )
        options.update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout))
    return options


def test_cli_page_names_only_real_options() -> None:
    documented = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", page("cli.md")))
    assert documented, "the CLI page names no option: the pattern is broken"
    missing = documented - cli_options()
    assert not missing, f"docs/cli.md names options the CLI does not have: {sorted(missing)}"


def test_cli_page_lists_every_exit_code() -> None:
    table = re.search(r"### Exit codes\n\n(.*?)\n\n", page("cli.md") + "\n\n", flags=re.DOTALL)
    assert table is not None
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table.group(1), flags=re.MULTILINE)}
    actual = {value for name, value in vars(_retriever).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert documented == actual


def test_methods_named_in_pages_exist() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    called = set(re.findall(r"\bpop\.([a-z_][a-z0-9_]*)\(", text))
    assert {"stat", "retr", "login"} <= called, "the pattern is broken"
    missing = [m for m in called if not (hasattr(fastpoplib.POP3, m) or hasattr(fastpoplib.AsyncPOP3, m))]
    assert not missing, f"the pages call methods the clients do not have: {missing}"
    names = set(re.findall(r"(?<![/\w])fastpoplib\.([A-Za-z_][A-Za-z0-9_]*)\b", text)) - {"testing", "exceptions"}
    assert not [n for n in names if not hasattr(fastpoplib, n)], names


def test_testing_page_matches_the_server() -> None:
    text = page("testing.md")
    for attribute in set(re.findall(r"\bsrv\.([a-z_][a-z0-9_]*)", text)):
        assert hasattr(POP3TestServer, attribute), f"POP3TestServer has no {attribute}"
    for fault in set(re.findall(r"\bFault\.([a-z_]+)\(", text)):
        assert hasattr(Fault, fault), f"Fault has no {fault}"
    fields = re.search(r"holds one `Session` per connection, with (.*?);", text, flags=re.DOTALL)
    assert fields is not None
    session = Session(("127.0.0.1", 0))
    for name in re.findall(r"`([a-z_]+)`", fields.group(1)):
        assert hasattr(session, name), f"Session has no {name}"
    for fixture in re.findall(r"^\| `(pop3_[a-z_]+)` \|", text, flags=re.MULTILINE):
        assert callable(getattr(pytest_plugin, fixture, None)), f"no fixture {fixture}"


def test_every_test_named_in_the_security_page_exists() -> None:
    """docs/security.md says how each statement is tested: each test file and test it names
    must exist (a test in the file it names, when it names one; files in any folder under
    tests/)."""
    sources = {p.name: p.read_text() for p in TESTS.rglob("test_*.py")}
    missing = []
    for cell in re.findall(r"`([^`]+)`", page("security.md")):
        if re.fullmatch(r"test_\w+\.py", cell):  # a whole file
            if cell not in sources:
                missing.append(cell)
            continue
        m = re.fullmatch(r"(?:(test_\w+\.py)::)?(test_\w+)", cell)
        if m is None:
            continue
        where = [name for name, text in sources.items() if re.search(rf"def {m.group(2)}\b", text)]
        if not where or (m.group(1) and m.group(1) not in where):
            missing.append(cell)
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
