"""The shipped type information is honest and useful.

- The extension's stub matches the binary (mypy.stubtest).
- Correct user code passes `mypy --strict`; for the modules whose annotations are complete, no
  expression in that code is `Any` (`--disallow-any-expr`).
- Wrong user code is reported: the misuse files mark each wrong line with
  `# type: ignore[code]`, and `--strict` includes `--warn-unused-ignores`, so a misuse that mypy
  does not report (a type that became `Any` or too loose) fails the test.
  `test_unreported_misuse_fails` shows that this mechanism can fail.

The client classes (POP3, POP3_SSL, AsyncPOP3, AsyncPOP3_SSL) are still typed `Any`: their
two tests are strict xfails, so they start failing (XPASS) the day the typed client lands, as a
reminder to drop the marks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is part of the test extra")

HERE = Path(__file__).parent
TYPECHECK = HERE / "typecheck"
CLIENTS_UNTYPED = pytest.mark.xfail(
    strict=True,
    reason="the client classes return Any until the typed client API of issue 14 lands; then remove this mark",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], check=False, capture_output=True, text=True, timeout=300, cwd=HERE)


def mypy(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run("mypy", "--strict", "--cache-dir=/dev/null", *flags, str(path))


def test_stub_matches_extension() -> None:
    result = run("mypy.stubtest", "fastpoplib._core")
    assert result.returncode == 0, result.stdout + result.stderr


def test_usage_passes_mypy_strict() -> None:
    result = mypy(TYPECHECK / "usage.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_testing_and_exceptions_usage_has_no_any() -> None:
    result = mypy(TYPECHECK / "usage_testing.py", "--disallow-any-expr")
    assert result.returncode == 0, result.stdout + result.stderr


def test_testing_and_exceptions_misuse_is_reported() -> None:
    result = mypy(TYPECHECK / "misuse_testing.py")
    assert result.returncode == 0, result.stdout + result.stderr


@CLIENTS_UNTYPED
def test_client_usage_has_no_any() -> None:
    result = mypy(TYPECHECK / "usage.py", "--disallow-any-expr")
    assert result.returncode == 0, result.stdout + result.stderr


@CLIENTS_UNTYPED
def test_client_misuse_is_reported() -> None:
    result = mypy(TYPECHECK / "misuse_clients.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_unreported_misuse_fails(tmp_path: Path) -> None:
    # A line marked as misuse that is in fact fine must make the check fail.
    sample = tmp_path / "fine.py"
    sample.write_text("from fastpoplib.testing import sample_mailbox\n\ncount: int = len(sample_mailbox(2))  # type: ignore[assignment]\n")
    result = mypy(sample)
    assert result.returncode != 0
    assert 'Unused "type: ignore" comment' in result.stdout, result.stdout


def test_py_typed_is_shipped() -> None:
    import fastpoplib

    assert (Path(fastpoplib.__file__).parent / "py.typed").exists()
    assert (Path(fastpoplib.__file__).parent / "_core.pyi").exists()
