"""Benchmarks of a debug build measure the wrong thing: refuse unless asked."""

import os
import sys

from fastpoplib import _core


def require_release_build() -> None:
    if _core.debug_build() and not os.environ.get("FASTPOPLIB_BENCH_DEBUG"):
        sys.exit("fastpoplib is a debug build: run `maturin develop --release` (or `pip install .`), "
                 "or set FASTPOPLIB_BENCH_DEBUG=1 to measure it anyway")
