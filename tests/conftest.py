"""Fixtures shared by several test files, and the session's compilation cache."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

import pytest

_CACHE_VAR = "JAXDARTS_TEST_CACHE_DIR"


def pytest_configure(config) -> None:
    """One persistent compilation cache for the whole session, in a fresh folder.

    The tests compile many equal programs (the same small supernets and agents in
    several files, the same commands run again as subprocesses); each is compiled
    once and loaded after that. The folder is made by the controlling process before
    any worker starts (workers and the commands they run inherit
    ``JAXDARTS_CACHE_DIR``), so nothing of the user's own cache is read or written,
    and it is deleted at the end. Set ``JAXDARTS_TEST_CACHE_DIR`` to keep one.
    """
    if not hasattr(config, "workerinput") and _CACHE_VAR not in os.environ:
        path = tempfile.mkdtemp(prefix="jaxdarts-test-cache-")
        os.environ[_CACHE_VAR] = path
        config._jaxdarts_cache_to_delete = path
    os.environ["JAXDARTS_CACHE_DIR"] = os.environ[_CACHE_VAR]
    from jaxdarts.runs import enable_compilation_cache

    enable_compilation_cache(os.environ[_CACHE_VAR])


def pytest_unconfigure(config) -> None:
    path = getattr(config, "_jaxdarts_cache_to_delete", None)
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
