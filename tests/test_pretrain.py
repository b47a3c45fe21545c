"""Tests of supernet pre-training (``jaxdarts.pretrain``).

Every run here uses the same tiny supernet (C=4, one cell: compiling the
training step of 2 cells took twice as long) on 400 of scikit-learn's
8x8 digits (written as an ``.npz`` dataset: 320 train images, halves of 160/160) with
the same static settings, so the train and eval programs compile once per module.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import assert_trees_equal, checkpoint_target

from jaxdarts import config as config_lib
from jaxdarts import pretrain as P
from jaxdarts import training as T
from jaxdarts.checkpoint import Checkpointer, load_supernet, supernet_config_from_meta
from jaxdarts.runs import ConfigMismatchError, RunExistsError
from jaxdarts.tasks import supernet_config, supernet_task

EPOCHS = 3
STEPS_PER_EPOCH = 20  # 160 training images / batch 8
SEED = 3


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images[:400] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=d.target[:400].astype(np.int32))
    return str(path)


@pytest.fixture(scope="module")
def cfg(tiny_npz) -> dict:
    return _load(
        "quick",
        **{
            "data.dataset": f"npz:{tiny_npz}",
            "supernet.channels": 4,
            "supernet.layers": 1,
            "train.epochs": EPOCHS,
            "train.batch_size": 8,
            "train.eval_batch_size": 80,
            "train.steps_per_call": 10,  # 2 chunks per epoch: a test stops mid-epoch
            "seed": SEED,
            "run.max_to_keep": "null",
        },
    )


def _load(preset: str, **overrides) -> dict:
    return config_lib.load("pretrain", preset=preset, overrides=overrides)


@pytest.fixture(scope="module")
def straight(cfg, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "straight"
    result = P.run(cfg, out)
    return out, result


def _restore(run_dir: Path, step: int | None = None) -> dict:
    """The raw checkpoint tree (no target needed: mirrors run()'s tree)."""
    from jaxdarts.checkpoint import Checkpointer as C

    with C(run_dir / "checkpoints") as ck:
        step = ck.latest_step() if step is None else step
        return _restore_tree(ck, step, run_dir)


def _restore_tree(ck: Checkpointer, step: int, run_dir: Path) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    from jaxdarts.data import load_dataset, split_indices

    ds = load_dataset(config["data"]["dataset"])
    tr, _ = split_indices(len(ds.train_labels), config["seed"])
    task = supernet_task(config, ds.num_classes)
    setup = T.make_setup(config, ds.image_shape, len(tr), ds.mean, ds.std)
    out = ck.restore(step, checkpoint_target(task, setup, ds.image_shape))
    out["setup"], out["task"] = setup, task
    out["image_shape"] = ds.image_shape
    return out


# ----------------------------------------------------------------- end to end


def test_outputs(straight):
    out, result = straight
    for name in ("config.json", "env.json", "metrics.jsonl", "log.txt", "result.json"):
        assert (out / name).is_file(), name
    assert (out / "supernet" / "supernet.json").is_file()
    steps = Checkpointer(out / "checkpoints").all_steps()
    assert steps == [e * STEPS_PER_EPOCH for e in range(1, EPOCHS + 1)]
    metrics = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["epoch"] for m in metrics] == list(range(EPOCHS + 1))
    for m in metrics[1:]:
        for k in (
            "lr",
            "train_loss",
            "train_acc",
            "valid_loss",
            "valid_acc",
            "images_per_s",
            "compile_s",
            "time",
        ):
            assert math.isfinite(m[k]), k
    meta = json.loads((out / "supernet" / "supernet.json").read_text())
    assert meta["space"] == "darts" and meta["channels"] == 4 and meta["layers"] == 1
    assert meta["num_classes"] == 10 and meta["stem_multiplier"] == 3
    assert meta["swap_cells"] is False and meta["image_shape"] == [8, 8, 1]
    assert meta["seed"] == meta["split_seed"] == SEED
    assert meta["compat"] is None and meta["epoch"] == result["best_valid_epoch"]
    assert len(meta["mean"]) == len(meta["std"]) == 1
    assert result["best_valid_acc"] == max(m["valid_acc"] for m in metrics[1:])


def test_validation_loss_goes_down(straight):
    out, result = straight
    before, after = result["initial_valid_loss"], result["final_valid_loss"]
    # Measured 2.284 -> 1.700 (seed 3; seeds 0-3: drops of 0.23-0.74).
    assert after < before - 0.3, (before, after)


def test_lr_schedule(straight):
    out, _ = straight
    metrics = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    lr0, lr_min = 0.05, 0.001  # quick preset's lr, the reference's eta_min
    for m in metrics[1:]:
        e = m["epoch"] - 1
        want = lr_min + 0.5 * (lr0 - lr_min) * (1 + math.cos(math.pi * e / EPOCHS))
        assert m["lr"] == pytest.approx(want, rel=1e-6)
    paper = _load("paper")["optim"]
    assert paper["lr"] == 0.025 and paper["lr_min"] == 0.001
    for e in (0, 1, 10, 25, 49):
        want = 0.001 + 0.5 * (0.025 - 0.001) * (1 + math.cos(math.pi * e / 50))
        assert T.cosine_lr(0.025, 0.001, 50, e) == pytest.approx(want, rel=1e-12)


def test_alphas_never_change(straight):
    out, _ = straight
    tree = _restore(out)
    setup = tree["setup"]
    state_key, _ = jax.random.split(jax.random.key(SEED))
    init = T.create_state(tree["task"], state_key, tree["image_shape"], setup)
    assert_trees_equal(tree["state"].extra["alphas"], init.extra["alphas"])
    a = np.asarray(init.extra["alphas"]["normal"])
    assert a.shape == (14, 8) and 0.5e-3 < a.std() < 2e-3
    meta = json.loads((out / "supernet" / "supernet.json").read_text())
    np.testing.assert_array_equal(np.asarray(meta["alphas"]["normal"], np.float32), a)
    # ... while the weights did change.
    assert not np.array_equal(
        np.asarray(tree["state"].params["head"]["Dense_0"]["kernel"]),
        np.asarray(init.params["head"]["Dense_0"]["kernel"]),
    )


# --------------------------------------------------------------- load_supernet


def test_load_supernet_round_trip(straight):
    out, result = straight
    variables, meta = load_supernet(out)
    variables2, meta2 = load_supernet(out / "supernet")
    assert_trees_equal(variables, variables2)
    assert meta == meta2
    assert set(variables) == {"params", "batch_stats"}
    best = _restore(out, result["best_valid_epoch"] * STEPS_PER_EPOCH)["state"]
    assert_trees_equal(variables["params"], best.params)
    assert_trees_equal(variables["batch_stats"], best.batch_stats)
    assert meta["image_shape"] == (8, 8, 1)
    # matching expectations pass, a SupernetConfig included
    load_supernet(out, expect={"space": "darts", "channels": 4, "layers": 1})
    load_supernet(out, expect=supernet_config_from_meta(meta, impl="shift"))
    load_supernet(out, expect={"image_shape": [8, 8, 1], "num_classes": 10})


def test_load_supernet_mismatch(straight):
    out, _ = straight
    with pytest.raises(ValueError) as err:
        load_supernet(
            out,
            expect={
                "space": "s2",
                "channels": 16,
                "layers": 1,
                "image_shape": (32, 32, 3),
                "swap_cells": True,
            },
        )
    msg = str(err.value)
    for part in (
        "space 'darts'",
        "channels 4",
        "image_shape (8, 8, 1)",
        "swap_cells False",
        "space 's2'",
        "channels 16",
        "image_shape (32, 32, 3)",
        "swap_cells True",
    ):
        assert part in msg, (part, msg)
    assert "layers" not in msg
    with pytest.raises(ValueError, match="cannot check"):
        load_supernet(out, expect={"colour": "red"})


def test_load_supernet_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_supernet(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no pre-trained supernet"):
        load_supernet(tmp_path / "empty")


# ----------------------------------------------------------- resume, overwrite


class _StopAfterPolls:
    """Requests a stop at the n-th poll (polled after every chunk of steps)."""

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def requested(self) -> bool:
        self.n -= 1
        return self.n <= 0


def test_interrupt_and_resume_is_bitwise_exact(cfg, straight, tmp_path):
    out = tmp_path / "resumed"
    # stopped in the middle of epoch 1 (after its first chunk of 10 steps) ...
    r1 = P.run(cfg, out, interrupt=_StopAfterPolls(1))
    assert r1["interrupted"] and (r1["epoch"], r1["step"]) == (0, 10)
    # ... resumed and stopped again after epoch 1 ...
    r2 = P.run(cfg, out, resume=True, stop_after=1)
    assert r2["interrupted"] and (r2["epoch"], r2["step"]) == (1, 0)
    # ... and finished.
    r3 = P.run(cfg, out, resume=True)
    assert not r3.get("interrupted")
    ref = _restore(straight[0])
    got = _restore(out)
    assert_trees_equal(got["state"], ref["state"])
    va, _ = load_supernet(out)
    vb, _ = load_supernet(straight[0])
    assert_trees_equal(va, vb)
    drop = ("time", "images_per_s", "compile_s")

    def clean(path):
        lines = (path / "metrics.jsonl").read_text().splitlines()
        return [
            {k: v for k, v in json.loads(x).items() if k not in drop} for x in lines
        ]

    assert clean(out) == clean(straight[0])


def test_resume_refuses_changed_config(cfg, straight):
    with pytest.raises(ConfigMismatchError):
        P.run(
            copy.deepcopy(cfg) | {"optim": dict(cfg["optim"], lr=0.1)},
            straight[0],
            resume=True,
        )


def test_refuses_to_overwrite(cfg, straight, capsys):
    out, _ = straight
    before = (out / "config.json").read_text()
    t0 = time.perf_counter()
    with pytest.raises(RunExistsError):
        P.run(cfg, out)
    assert time.perf_counter() - t0 < 5
    assert (out / "config.json").read_text() == before
    rc = P.main(["--preset", "quick", "--out", str(out), "--no-compile-cache"])
    assert rc == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "config.json").read_text() == before


# ------------------------------------------------------------------------- CLI


def test_cli_runs_and_stops(cfg, tiny_npz, tmp_path):
    out = tmp_path / "cli"
    argv = ["--preset", "quick", "--dataset", f"npz:{tiny_npz}", "--channels", "4"]
    argv += ["--layers", "1", "--epochs", str(EPOCHS), "--batch-size", "8"]
    argv += ["--seed", str(SEED), "--set", "train.eval_batch_size=80"]
    argv += ["--set", "train.steps_per_call=10", "--set", "run.max_to_keep=null"]
    argv += ["--stop-after", "1", "--out", str(out), "--no-compile-cache"]
    assert P.main(argv) == 0
    assert json.loads((out / "config.json").read_text()) == cfg
    assert (out / "supernet" / "supernet.json").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "train.epochs must be an integer >= 1"),
        (["--set", "bogus=1"], "unknown config key 'bogus'"),
        (["--set", "optim.lr"], "--set needs KEY=VALUE"),
        (["--space", "nope"], "supernet.space must be one of"),
        (["--channels", "3"], "even number"),
        (["--set", "optim.momentum=1.5"], "optim.momentum must be a finite number"),
        (["--compat", "torch"], "invalid choice"),
        (["--mode", "darts2"], "invalid choice"),
        (["--resume", "/nonexistent/run"], "no config.json"),
        (["--resume", "a", "--out", "b"], "not both"),
        (["--stop-after", "0"], "--stop-after must be >= 1"),
    ],
)
def test_cli_bad_input_fails_fast(argv, message, refuses_fast):
    assert message in refuses_fast(P.main, argv)


def test_config():
    c = _load("paper")
    assert (c["data"]["dataset"], c["supernet"]["space"]) == ("cifar10", "darts")
    assert (c["supernet"]["channels"], c["supernet"]["layers"]) == (16, 8)
    assert (c["train"]["epochs"], c["train"]["batch_size"]) == (50, 64)
    assert (c["optim"]["momentum"], c["optim"]["weight_decay"]) == (0.9, 3e-4)
    assert (c["optim"]["grad_clip"], c["augment"]["cutout"]) == (5.0, 0)
    assert (c["supernet"]["alpha_std"], c["mode"]) == (1e-3, "weights")
    assert supernet_config(_load("paper", compat="dartsrl"), 10).swap_cells
    # The quick supernet is the one search's quick preset expects.
    q = _load("quick")["supernet"]
    s = config_lib.load("search", preset="quick")["supernet"]
    assert (q["space"], q["channels"], q["layers"]) == (
        s["space"],
        s["channels"],
        s["layers"],
    )
    with pytest.raises(config_lib.ConfigError, match="known keys"):
        _load("paper", nope=1)
    with pytest.raises(config_lib.ConfigError, match="unknown preset"):
        _load("fast")


def test_print_config(capsys):
    assert P.main(["--preset", "quick", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "supernet.channels" in text and "alpha_std" in text


# ---------------------------------------------------------------- darts1 mode


def test_darts1_mode_trains_alphas_and_weights():
    """First-order DARTS steps (one cell, C=2, one compile of ``train_step``)."""
    from sklearn.datasets import load_digits

    config = _load(
        "quick",
        mode="darts1",
        **{"supernet.channels": 2, "supernet.layers": 1, "train.batch_size": 16},
        # XLA's own ops (tested equal to the CPU default elsewhere): a quicker compile
        **{"supernet.impl": "xla"},
        **{"arch.lr": 0.05, "seed": SEED},
    )
    d = load_digits()
    images = np.rint(d.images[:16] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target[:16].astype(np.int32)
    task = supernet_task(config, 10)
    setup = T.make_setup(config, (8, 8, 1), 16, (0.3,), (0.4,), num_valid=16)
    state0 = T.create_state(task, jax.random.key(0), (8, 8, 1), setup)
    assert jax.tree.leaves(state0.extra["arch_opt"])
    step = jax.jit(T.train_step, static_argnames=("task", "setup"))

    def train(lr: float, n: int):
        state, arch_losses, losses = state0, [], []
        for j in range(n):
            hyper = {"lr": np.float32(lr)}
            state, m = step(
                state, images, labels, jax.random.key(j), hyper, task, setup,
                images, labels,
            )  # fmt: skip
            arch_losses.append(float(m["arch_loss_sum"]) / 16)
            losses.append(float(m["loss_sum"]) / 16)
        return state, arch_losses, losses

    def alphas(state):
        return np.asarray(state.extra["alphas"]["reduce"])

    # Weights frozen (lr 0): the alpha steps alone lower the loss.
    state, arch_losses, _ = train(0.0, 6)
    assert arch_losses[-1] < arch_losses[0] - 1e-3, arch_losses
    assert_trees_equal(state.params, state0.params)
    assert np.abs(alphas(state) - alphas(state0)).max() > 0.1  # steps of ~arch.lr
    # Both steps: alphas and weights change, the loss goes down.
    state, arch_losses, losses = train(0.05, 6)
    assert not np.array_equal(
        np.asarray(state.params["head"]["Dense_0"]["kernel"]),
        np.asarray(state0.params["head"]["Dense_0"]["kernel"]),
    )
    assert not np.array_equal(alphas(state), alphas(state0))
    assert losses[-1] < losses[0] - 0.1, losses


# ------------------------------------------------------------ README pattern


@pytest.mark.slow
def test_readme_quick_chain_pretrain_search_train(tmp_path):
    """The README's pattern at ``--preset quick``, through the three commands:
    pretrain -> disc-ckpt-acc search on that supernet -> train of its genotype.
    The supernet has one cell (the search says so too, to match the checkpoint):
    the same code paths as the preset's three, a third of the compile."""
    import json

    from jaxdarts import search as search_cmd
    from jaxdarts import train as train_cmd

    pre, run, ev = tmp_path / "sn", tmp_path / "s", tmp_path / "t"
    argv = ["--preset", "quick", "--layers", "1", "--set", "train.epochs=1"]
    assert P.main([*argv, "--out", str(pre)]) == 0
    argv = ["--variant", "disc-ckpt-acc", "--preset", "quick", "--total-steps", "256"]
    argv += ["--set", "supernet.layers=1"]
    argv += ["--supernet-ckpt", str(pre / "supernet"), "--out", str(run)]
    assert search_cmd.main(argv) == 0
    genotype = run / "genotype.json"
    assert genotype.exists() and (run / "summary.json").exists()
    argv = ["--genotype", str(genotype), "--preset", "quick", "--out", str(ev)]
    assert train_cmd.main([*argv, "--set", "train.epochs=1"]) == 0
    result = json.loads((ev / "result.json").read_text())
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["epochs"] == 1
