"""The shipped type information is honest: the extension's stub matches the binary
(mypy.stubtest) and typed user code passes `mypy --strict`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is part of the test extra")

HERE = Path(__file__).parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=HERE.parent / "tests")


def test_stub_matches_extension() -> None:
    result = run("mypy.stubtest", "fastpoplib._core")
    assert result.returncode == 0, result.stdout + result.stderr


def test_usage_passes_mypy_strict() -> None:
    result = run("mypy", "--strict", "--cache-dir=/dev/null", str(HERE / "typecheck" / "usage.py"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_py_typed_is_shipped() -> None:
    import fastpoplib

    assert (Path(fastpoplib.__file__).parent / "py.typed").exists()
    assert (Path(fastpoplib.__file__).parent / "_core.pyi").exists()
