"""The shipped type information is honest: the extension's stub matches the binary
(mypy.stubtest), typed user code passes `mypy --strict` with the exact types poplib's users
expect, deliberate misuse is reported line by line, and the asyncio commands are coroutine
functions documented like the blocking ones."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is part of the test extra")

HERE = Path(__file__).parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=HERE)


def test_stub_matches_extension() -> None:
    result = run("mypy.stubtest", "fastpoplib._core")
    assert result.returncode == 0, result.stdout + result.stderr


def test_usage_passes_mypy_strict() -> None:
    result = run("mypy", "--strict", "--cache-dir=/dev/null", str(HERE / "typecheck" / "usage.py"))
    assert result.returncode == 0, result.stdout + result.stderr


# `# E: code` (or `# E: code1, code2`) at the end of a line of misuse.py.
EXPECTED = re.compile(r"#\s*E:\s*([a-z][a-z-]*(?:\s*,\s*[a-z][a-z-]*)*)\s*$")
REPORTED = re.compile(r"^[^:]*misuse\.py:(\d+): error: .*\[([a-z-]+)\]$")


def test_misuse_is_reported_by_mypy_strict() -> None:
    """Every marked line gets its error, and no other line any: a signature decaying to
    ``Any`` (or an async command that is no longer a coroutine) fails this test."""
    path = HERE / "typecheck" / "misuse.py"
    expected = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = EXPECTED.search(line)
        if match:
            expected |= {(number, code.strip()) for code in match.group(1).split(",")}
    assert len(expected) > 20, "misuse.py lost its markers"
    result = run("mypy", "--strict", "--cache-dir=/dev/null", "--no-error-summary", "--show-error-codes", str(path))
    reported = set()
    for line in result.stdout.splitlines():
        match = REPORTED.match(line)
        if match:
            reported.add((int(match.group(1)), match.group(2)))
        else:
            assert ": note: " in line, f"unexpected mypy output: {line}\n{result.stdout}{result.stderr}"
    assert result.returncode == 1, result.stdout + result.stderr
    assert sorted(expected - reported) == [], "misuse mypy missed\n" + result.stdout
    assert sorted(reported - expected) == [], "errors on lines not marked\n" + result.stdout


COMMANDS = (
    "user pass_ apop rpop auth login stat list retr top uidl dele noop rset utf8 lang capa quit stls "
    "dele_many retr_bytes retr_to retr_message top_headers messages aclose"
).split()


@pytest.mark.parametrize("name", COMMANDS)
def test_async_commands_are_coroutine_functions(name: str) -> None:
    import fastpoplib

    for cls in (fastpoplib.AsyncPOP3, fastpoplib.AsyncPOP3_SSL):
        method = getattr(cls, name)
        assert inspect.iscoroutinefunction(method), f"{cls.__name__}.{name}"
        assert method.__doc__, f"{cls.__name__}.{name} has no docstring"


def test_async_iterators_are_not_coroutines() -> None:
    """``async for x in pop.retr_many(...)`` needs the iterator itself, not a coroutine."""
    import fastpoplib

    for name in ("retr_many", "top_many", "retr_iter"):
        assert not inspect.iscoroutinefunction(getattr(fastpoplib.AsyncPOP3, name)), name


def test_public_methods_are_documented() -> None:
    import fastpoplib

    classes = (fastpoplib.POP3, fastpoplib.POP3_SSL, fastpoplib.AsyncPOP3, fastpoplib.AsyncPOP3_SSL)
    missing = []
    for cls in classes:
        if not cls.__doc__:
            missing.append(cls.__name__)
        for name in dir(cls):
            if name.startswith("_") and name not in ("__init__", "__enter__", "__exit__", "__aenter__", "__aexit__"):
                continue
            member = inspect.getattr_static(cls, name)
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                member = member.fget
            if not callable(member) or getattr(member, "__module__", "").split(".")[0] != "fastpoplib":
                continue
            if not inspect.getdoc(member):
                missing.append(f"{cls.__name__}.{name}")
    assert missing == []


def mypy(path: Path, *flags: str) -> subprocess.CompletedProcess:
    return run("mypy", "--strict", "--cache-dir=/dev/null", *flags, str(path))


def test_testing_and_exceptions_usage_has_no_any() -> None:
    """Correct use of fastpoplib.testing and fastpoplib.exceptions passes, and no expression in
    it is ``Any`` (a function returning ``Any``, or an attribute holding it, fails this)."""
    result = mypy(HERE / "typecheck" / "usage_testing.py", "--disallow-any-expr")
    assert result.returncode == 0, result.stdout + result.stderr


def test_testing_and_exceptions_misuse_is_reported() -> None:
    """Each wrong line of misuse_testing.py carries ``# type: ignore[code]``; ``--strict``
    includes ``--warn-unused-ignores``, so a misuse mypy stops reporting fails this."""
    result = mypy(HERE / "typecheck" / "misuse_testing.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_unreported_misuse_fails(tmp_path: Path) -> None:
    # A line marked as misuse that is in fact fine must make the check above fail.
    sample = tmp_path / "fine.py"
    sample.write_text("from fastpoplib.testing import sample_mailbox\n\ncount: int = len(sample_mailbox(2))  # type: ignore[assignment]\n")
    result = mypy(sample)
    assert result.returncode != 0
    assert 'Unused "type: ignore" comment' in result.stdout, result.stdout


def test_py_typed_is_shipped() -> None:
    import fastpoplib

    assert (Path(fastpoplib.__file__).parent / "py.typed").exists()
    assert (Path(fastpoplib.__file__).parent / "_core.pyi").exists()
