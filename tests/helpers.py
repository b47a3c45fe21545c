"""Helpers shared by several test files (``from helpers import ...``)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def assert_trees_equal(a: Any, b: Any) -> None:
    """Two pytrees have the same structure and bit-identical leaves."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def checkpoint_target(task: Any, setup: Any, image_shape: tuple[int, ...]) -> dict:
    """A training-run checkpoint's tree (fresh state, zero position) to restore
    into; the state is initialised with key 0."""
    from jaxdarts import training as T

    state = T.create_state(task, jax.random.key(0), image_shape, setup)
    return {
        "state": state,
        "epoch": np.int32(0),
        "step": np.int32(0),
        "sums": T.zero_sums(task),
        "best_acc": np.float64(0),
        "best_epoch": np.int32(0),
    }
