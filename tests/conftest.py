"""Fixtures shared by several test files."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest


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
