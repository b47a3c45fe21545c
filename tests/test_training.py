"""Tests of the training core (``jaxdarts.training``) with a linear model.

A softmax regression on flattened 8x8 digits compiles in a second, so the loop's
behaviour (schedule as an argument, chunks, resume, Ctrl-C, metrics) is tested
here without a supernet; tests/test_pretrain.py and tests/test_train_cli.py run
the two real tasks end to end.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal

from jaxdarts import training as T
from jaxdarts.runs import RunDir


@dataclasses.dataclass(frozen=True)
class Linear:
    """``logits = flatten(x) @ w + b``; ``hyper['scale']`` multiplies the logits
    (a task's own per-epoch scalar)."""

    classes: int = 10
    extra_sums: tuple[str, ...] = ()
    paired_valid: bool = False

    def init(self, key, image_shape):
        d = int(np.prod(image_shape))
        w = 0.01 * jax.random.normal(key, (d, self.classes), jnp.float32)
        return {"w": w, "b": jnp.zeros(self.classes)}, {}, {}

    def _logits(self, params, x):
        return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]

    def loss(self, params, state, x, y, key, hyper):
        logits = self._logits(params, x) * hyper["scale"]
        ce = T.cross_entropy(logits, y)
        return ce.mean(), (ce.sum(), logits, state.batch_stats)

    def logits(self, state, x, key):
        return self._logits(state.params, x)

    def hyper(self, epoch, epochs):
        return {"scale": 1.0 + epoch / epochs}


CONFIG = {
    "train": {"batch_size": 16, "steps_per_call": 3, "eval_batch_size": 50},
    "optim": {"lr": 0.1, "lr_min": 0.01, "momentum": 0.9, "weight_decay": 1e-3,
              "grad_clip": 5.0},
    "augment": {"cutout": 0, "crop_pad": 1, "flip": False},
}  # fmt: skip
EPOCHS = 3


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images[:300] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return x, d.target[:300].astype(np.int32)


def _job(digits, path: Path) -> T.Job:
    x, y = digits
    task = Linear()
    # 200 training images / batch 16 = 12 steps, 4 chunks of 3 per epoch
    setup = T.make_setup(CONFIG, (8, 8, 1), 200, (0.3,), (0.4,))
    rundir = RunDir(path, {})
    rundir.path.mkdir(parents=True, exist_ok=True)
    job = T.Job("train", task, setup, CONFIG["optim"], EPOCHS,
                T.commit({"train_x": x[:200], "train_y": y[:200]}),
                T.commit(T.pad_eval_set(x[200:], y[200:], 50)), "test", rundir,
                run_key=T.commit(jax.random.key(7)))  # fmt: skip
    return job


def _state(job: T.Job) -> T.TrainState:
    return T.create_state(job.task, jax.random.key(1), (8, 8, 1), job.setup)


def test_cosine_lr_per_epoch():
    for e in range(EPOCHS + 1):
        want = 0.01 + 0.5 * (0.1 - 0.01) * (1 + math.cos(math.pi * e / EPOCHS))
        assert T.cosine_lr(0.1, 0.01, EPOCHS, e) == pytest.approx(want, rel=1e-12)
    assert T.cosine_lr(0.1, 0.01, EPOCHS, EPOCHS) == pytest.approx(0.01)


def test_schedule_is_an_argument_and_chunk_equals_steps(digits, tmp_path):
    """One compiled chunk serves every learning rate; a chunk of 3 steps equals 3
    single steps on the same batches and keys."""
    from jaxdarts.data import batch_indices

    job = _job(digits, tmp_path)
    setup, task = job.setup, job.task
    before = T.train_chunk._cache_size()
    outs = []
    for lr in (0.1, 0.05):
        hyper = {"lr": jnp.float32(lr), "scale": jnp.float32(1.0)}
        state, sums = _state(job), T.zero_sums(task)
        zero = jnp.int32(0)
        args = (state, sums, job.data, job.run_key, zero, zero, hyper)
        state, sums = T.train_chunk(*args, task, setup)
        outs.append((state, sums))
    assert T.train_chunk._cache_size() - before == 1
    assert not np.array_equal(outs[0][0].params["w"], outs[1][0].params["w"])
    # The same three steps by hand (lr 0.05).
    k_train, _, root, _ = T.epoch_keys(job.run_key, 0)
    idx = batch_indices(k_train, setup.num_train, setup.batch_size)
    state, total = _state(job), 0.0
    step = jax.jit(T.train_step, static_argnames=("task", "setup"))
    hyper = {"lr": jnp.float32(0.05), "scale": jnp.float32(1.0)}
    for j in range(3):
        b = np.asarray(idx[j])
        x, y = job.data["train_x"][b], job.data["train_y"][b]
        key = jax.random.fold_in(root, j)
        state, m = step(state, x, y, key, hyper, task, setup)
        total += float(m["loss_sum"])
    w, w_chunk = state.params["w"], outs[1][0].params["w"]
    np.testing.assert_allclose(w, w_chunk, rtol=1e-5, atol=1e-8)
    assert float(outs[1][1]["loss_sum"]) == pytest.approx(total, rel=1e-5)
    assert int(outs[1][1]["count"]) == 3 * 16


def _records(path: Path) -> list[dict]:
    drop = ("time", "images_per_s", "compile_s")
    lines = (path / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]


def _stop_at(n: int):
    """An ``interrupt`` whose ``requested`` turns True at the n-th poll (one poll
    per chunk)."""
    polls = itertools.count(1)
    return type("Stop", (), {"requested": property(lambda _: next(polls) >= n)})()


def test_fit_resume_is_bitwise_exact(digits, tmp_path):
    straight = _job(digits, tmp_path / "straight")
    a = T.fit(straight, _state(straight))
    assert a.finished and not a.interrupted and a.epoch == EPOCHS
    split = _job(digits, tmp_path / "split")
    b = T.fit(split, _state(split), interrupt=_stop_at(6))  # epoch 1, after 2 chunks
    assert b.interrupted and (b.epoch, b.step) == (1, 6)
    c = T.fit(split, _state(split), resume=True, stop_after=2)
    assert not c.interrupted and not c.finished and (c.epoch, c.step) == (2, 0)
    d = T.fit(split, _state(split), resume=True)
    assert d.finished
    assert_trees_equal(d.state, a.state)
    assert _records(split.rundir.path) == _records(straight.rundir.path)
    assert (d.best_acc, d.best_epoch) == (a.best_acc, a.best_epoch)
    records = straight.rundir.read_metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[0]["compile_s"] > 0 and records[1]["compile_s"] == 0
    for r in records:  # the task's per-epoch scalar is recorded with the lr
        assert r["scale"] == 1 + (r["epoch"] - 1) / EPOCHS
        assert r["images_per_s"] > 0 and 0 <= r["test_acc"] <= r["best_test_acc"]
    assert records[-1]["test_acc"] > 0.7  # digits are linearly separable-ish


def test_run_command_exit_codes(monkeypatch):
    from jaxdarts import cli

    args = SimpleNamespace(no_compile_cache=True, resume=None, out="x",
                           overwrite=False, stop_after=None, devices=None)  # fmt: skip
    for result, code in (
        ({"ctrl_c": True, "interrupted": True}, cli.EXIT_INTERRUPTED),
        ({"ctrl_c": False, "interrupted": True}, 0),  # --stop-after
        ({"test_accuracy": 0.9}, 0),
    ):
        assert T.run_command(lambda *a, r=result, **k: r, {}, args) == code

    def exists(*a, **k):
        from jaxdarts.runs import RunExistsError

        raise RunExistsError("somewhere")

    with pytest.raises(cli.UsageError, match="already exists"):
        T.run_command(exists, {}, args)


def test_format_summary():
    text = T.format_summary("done", [("a", "1"), ("longer", "2")], 125.0)
    assert text.splitlines() == ["done (wall time 2m05s)", "  a       1",
                                 "  longer  2"]  # fmt: skip
