"""Helpers shared by several test files (``from helpers import ...``)."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np


def xla_flags_with_devices(k: int) -> str:
    """The test run's ``XLA_FLAGS`` (with conftest's compile flags) forcing ``k``
    CPU devices, for a subprocess: any device count already there is replaced."""
    force = "--xla_force_host_platform_device_count"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if force not in f]
    return " ".join([*flags, f"{force}={k}"])


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
