"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

import pytest

_CACHE_VAR = "JAXDARTS_CACHE_DIR"

# XLA:CPU compile options for the test processes: LLVM's code generation at -O0 and
# XLA's quick-compile preset. The test programs are small and run briefly, so most
# of the suite's time is compilation; these flags roughly halve it. They change the
# generated code, so values can differ from a default-flag run in the last bits
# (and a search, being chaotic, can then take another path); every comparison in
# the suite is between runs made under the same flags or against an independent
# reference within a tolerance. The commands and the benchmarks keep XLA's defaults.
TEST_XLA_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_opt_preset=FAST_COMPILE",
)


def pytest_configure(config) -> None:
    """One JAX compilation cache for the whole test run, in a temporary folder,
    and ``TEST_XLA_FLAGS`` added to ``XLA_FLAGS``.

    The first process (pytest itself, or xdist's controller) makes the folder and
    exports it as ``JAXDARTS_CACHE_DIR``, which the xdist workers and the commands
    the tests start inherit; every test process turns the cache on. A program
    compiled by one test is then loaded, not compiled again, by the next one that
    builds it, and no test writes into the user's own cache
    (``~/.cache/jaxdarts``), which the CLI commands use by default. Tests of the
    cache itself, and the multi-process runs, set their own folders.
    """
    if not hasattr(config, "workerinput"):
        path = tempfile.mkdtemp(prefix="jaxdarts-test-cache-")
        config._jaxdarts_cache = path  # type: ignore[attr-defined]
        os.environ[_CACHE_VAR] = path
        flags = os.environ.get("XLA_FLAGS", "").split()
        flags += [f for f in TEST_XLA_FLAGS if f not in flags]
        os.environ["XLA_FLAGS"] = " ".join(flags)
    from jaxdarts.runs import enable_compilation_cache

    enable_compilation_cache(os.environ[_CACHE_VAR])


def pytest_unconfigure(config) -> None:
    path = getattr(config, "_jaxdarts_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def refuses_fast(capsys, monkeypatch) -> Callable[[Callable, Sequence[str]], str]:
    """Checks that a command's ``main`` refuses ``argv`` at once.

    Returns a function ``(main, argv) -> stderr`` that asserts that ``main(argv)``
    exits with status 2 (returned, or argparse's ``SystemExit``) within 5 s and
    without loading any data set.
    """
    import jaxdarts.data

    def no_data(*a, **k):
        raise AssertionError("data loaded before the arguments were checked")

    monkeypatch.setattr(jaxdarts.data, "load_dataset", no_data)

    def check(main: Callable, argv: Sequence[str]) -> str:
        t0 = time.perf_counter()
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's own errors
            code = e.code
        assert code == 2
        assert time.perf_counter() - t0 < 5
        return capsys.readouterr().err

    return check
