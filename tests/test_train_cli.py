"""End-to-end tests of ``python -m jaxdarts.train`` on scikit-learn digits.

Every training run here uses the same network and batch settings (only the epoch
count differs, and the learning rate is an argument of the jitted step), so the
train and eval functions compile once for the whole module.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
import pytest
from helpers import assert_trees_equal, checkpoint_target

from jaxdarts import config as config_lib
from jaxdarts import train
from jaxdarts import training as T
from jaxdarts.tasks import evalnet_task

# Tiny settings on top of --preset quick: 1 (reduction) cell of 4 channels, so that
# XLA:CPU compiles fast; 16 steps per jitted call (44 steps per epoch at batch 32,
# so an epoch is 3 calls). tests/test_evalnet.py covers the deeper networks.
TINY = ["--preset", "quick", "--channels", "4", "--layers", "1"]
TINY += ["--set", "train.steps_per_call=16", "--no-compile-cache"]
GENOTYPE = "disc-acc"
# Measured: 3 epochs of TINY reach 0.87 test accuracy on digits (seed 0; chance 0.1;
# 2 cells: 0.95, the full quick preset: 0.98-0.99 after 10 epochs).
MIN_ACCURACY = 0.6


def _load(preset: str = "quick", genotype=GENOTYPE, **overrides) -> dict:
    from jaxdarts.genotypes import load_genotype, to_json_dict

    g = {"genotype": to_json_dict(load_genotype(genotype)), "genotype_source": genotype}
    return config_lib.load("train", preset=preset, overrides={**g, **overrides})


def _config(epochs: int) -> dict:
    return _load(
        **{"net.channels": 4, "net.layers": 1, "train.epochs": epochs},
        **{"train.steps_per_call": 16},
    )


def _final_params(run_dir) -> dict:
    """The params of the run's latest checkpoint, as NumPy."""
    from jaxdarts.checkpoint import Checkpointer

    ckpt = Checkpointer(run_dir / "checkpoints")
    step = ckpt.latest_step()
    meta = ckpt.restore(step, _target())
    ckpt.close()
    return jax.tree.map(np.asarray, meta["state"].params), step


def _target():
    config = _config(4)
    task = evalnet_task(config, 10)
    setup = T.make_setup(config, (8, 8, 1), 1437, (0.5,), (0.5,))
    return checkpoint_target(task, setup, (8, 8, 1))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "quick"
    t0 = time.perf_counter()
    rc = train.main(["--genotype", GENOTYPE, *TINY, "--epochs", "3", "--out", str(out)])
    return out, rc, time.perf_counter() - t0


def test_quick_end_to_end(quick_run):
    out, rc, seconds = quick_run
    assert rc == 0
    for name in (
        "config.json",
        "genotype.json",
        "metrics.jsonl",
        "result.json",
        "curves.png",
        "log.txt",
    ):
        assert (out / name).is_file(), name
    assert (out / "checkpoints").is_dir()
    result = json.loads((out / "result.json").read_text())
    for key in ("test_accuracy", "best_test_accuracy", "params", "epochs"):
        assert key in result
    assert result["epochs"] == 3
    assert result["test_accuracy"] > MIN_ACCURACY, result
    assert result["best_test_accuracy"] >= result["test_accuracy"]
    records = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    keys = {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"}
    keys |= {"images_per_s", "compile_s", "time", "test_top5", "best_test_acc"}
    assert keys <= set(records[0])
    assert records[-1]["test_acc"] == result["test_accuracy"]
    # Cosine per epoch: lr(e) = 0.05 * (1 + cos(pi * e / 3)) / 2.
    np.testing.assert_allclose([r["lr"] for r in records], [0.05, 0.0375, 0.0125])
    config = json.loads((out / "config.json").read_text())
    assert config["genotype_source"] == GENOTYPE and config["net"]["channels"] == 4
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert seconds < 120


def test_refuses_to_overwrite(quick_run, capsys):
    out, _, _ = quick_run
    before = (out / "result.json").read_text()
    rc = train.main(["--genotype", GENOTYPE, *TINY, "--epochs", "1", "--out", str(out)])
    assert rc == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "result.json").read_text() == before
    # A changed config is refused on resume.
    rc = train.main(["--resume", str(out), "--epochs", "5", "--no-compile-cache"])
    assert rc == 2
    assert "train.epochs" in capsys.readouterr().err
    assert (out / "result.json").read_text() == before


def test_resume_is_bitwise_exact(tmp_path):
    """2 epochs + resume to 4 == 4 straight; also a Ctrl-C inside an epoch."""
    straight = tmp_path / "straight"
    res = train.run(_config(4), straight)
    assert res["epochs"] == 4

    split = tmp_path / "split"
    part = train.run(_config(4), split, stop_after=2)
    assert part["interrupted"] and part["epoch"] == 2
    assert not (split / "result.json").exists()
    train.run(_config(4), split, resume=True)

    class CtrlC:  # "pressed" at the 4th poll: epoch 1 (0-based), step 16 of 44
        polls = 0

        @property
        def requested(self):
            self.polls += 1
            return self.polls >= 4

    mid = tmp_path / "mid"
    part = train.run(_config(4), mid, interrupt=CtrlC())
    assert part["interrupted"] and (part["epoch"], part["step"]) == (1, 16)
    rc = train.main(["--resume", str(mid), "--no-compile-cache"])
    assert rc == 0

    ref, step = _final_params(straight)
    assert step == 4 * 44
    for other in (split, mid):
        params, step = _final_params(other)
        assert step == 4 * 44
        assert_trees_equal(params, ref)
        m_ref = json.loads((straight / "result.json").read_text())
        m = json.loads((other / "result.json").read_text())
        assert m["test_accuracy"] == m_ref["test_accuracy"]
    rows = [json.loads(x) for x in (mid / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--genotype", "no-such-genotype"], "unknown genotype"),
        (["--genotype", "disc-nwot", "--preset", "huge"], "invalid choice"),
        (["--genotype", "disc-nwot", "--epochs", "-3"], "train.epochs must be"),
        (["--genotype", "disc-nwot", "--batch-size", "0"], "train.batch_size must"),
        (["--genotype", "disc-nwot", "--drop-path", "1.5"], "net.drop_path must be"),
        (["--genotype", "disc-nwot", "--cutout", "-1"], "augment.cutout must be"),
        (["--genotype", "disc-nwot", "--set", "nope=1"], "unknown config key"),
        (["--genotype", "disc-nwot", "--set", "optim.lr"], "KEY=VALUE"),
        (["--genotype", "missing.json"], "does not exist"),
        (["--genotype", "Genotype(normal=[], normal_concatt=[2])"], "normal_concatt"),
        (["--epochs", "3"], "--genotype is required"),
        (["--resume", "/nonexistent/run"], "no config.json"),
    ],
)
def test_bad_cli_input_fails_fast(argv, message, refuses_fast):
    assert message in refuses_fast(train.main, argv)


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([["sep_conv_9x9", 0], ["skip_connect", 1]], "not a usable op"),
        ([["sep_conv_3x3", 0], ["skip_connect", 2]], "input 2 of node 0"),
    ],
)
def test_bad_genotype_file(tmp_path, refuses_fast, pairs, message):
    good = [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps({"normal": pairs + good[2:], "reduce": good}))
    argv = ["--genotype", str(path), "--preset", "quick"]
    assert message in refuses_fast(train.main, argv)


def test_print_config(capsys):
    assert train.main(["--genotype", "disc-nwot", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "net.drop_path" in text and "optim.lr" in text


def test_optimizer_matches_torch_sgd():
    """clip (on the raw gradient) -> + wd * w -> momentum buffer -> w -= lr * b."""
    cfg = {"grad_clip": 1.0, "weight_decay": 0.1, "momentum": 0.9}
    tx = T.sgd(cfg)
    w = {"a": np.array([1.0, -2.0], np.float32)}
    g = {"a": np.array([3.0, 4.0], np.float32)}  # norm 5 -> clipped to [0.6, 0.8]
    state = tx.init(w)
    u, state = tx.update(g, state, w)
    # b1 = clip(g) + wd * w = [0.6 + 0.1, 0.8 - 0.2]
    np.testing.assert_allclose(u["a"], [0.7, 0.6], rtol=1e-6)
    u, state = tx.update(g, state, w)
    # b2 = 0.9 * b1 + (clip(g) + wd * w) = 1.9 * b1
    np.testing.assert_allclose(u["a"], [1.33, 1.14], rtol=1e-6)
    assert T.cosine_lr(0.025, 0.0, 600, 0) == 0.025
    np.testing.assert_allclose(T.cosine_lr(0.025, 0.0, 600, 300), 0.0125)
    assert T.cosine_lr(0.025, 0.0, 600, 600) < 1e-12


def test_host_init_matches_flax_init():
    """The NumPy init draws from the distributions of the modules' initialisers."""
    from jaxdarts.genotypes import Genotype, to_darts_string

    pairs = (("dil_conv_3x3", 1), ("skip_connect", 0), ("max_pool_3x3", 1))
    pairs += (("skip_connect", 2),) + (("dil_conv_3x3", 1), ("skip_connect", 0)) * 2
    g = to_darts_string(Genotype(pairs, (2, 3, 4, 5), pairs, (2, 3, 4, 5)))
    kw = {"net.channels": 2, "net.layers": 1, "net.impl": "xla"}
    # unsafe_rbg: the distributions are what matters, and threefry's per-parameter
    # kernels take XLA:CPU ~10 s to compile even for this network.
    key = jax.random.key(3, impl="unsafe_rbg")
    states = {
        init: evalnet_task(_load(genotype=g, **kw, **{"net.init": init}), 10).init(
            key, (8, 8, 1)
        )
        for init in ("host", "flax")
    }
    (host_p, host_bs, _), (ref_p, ref_bs, _) = states["host"], states["flax"]
    assert jax.tree.structure(host_p) == jax.tree.structure(ref_p)
    assert_trees_equal(host_bs, ref_bs)
    kinds = set()
    flat_ref = dict(jax.tree_util.tree_flatten_with_path(ref_p)[0])
    for path, h in jax.tree_util.tree_flatten_with_path(host_p)[0]:
        r = flat_ref[path]
        assert h.shape == r.shape and h.dtype == r.dtype == np.float32
        parent = host_p
        for p in path[:-1]:
            parent = parent[p.key]
        name = path[-1].key
        if name in ("scale", "bias") and "kernel" not in parent:  # BatchNorm
            kinds.add("bn")
            assert_trees_equal(h, r)
            continue
        kernel = parent["kernel"] if name == "bias" else h
        bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
        kinds.add(f"{name}{len(h.shape)}")
        for x in (h, r):
            assert np.abs(x).max() <= bound * (1 + 1e-6)
            if x.size >= 16:  # P(max < bound/2) = 2^-16 for uniform draws
                assert np.abs(x).max() > bound / 2
    # conv 3x3/1x1 (4-d), depthwise (3-d), 1x1 and linear (2-d), linear bias, BN
    assert {"kernel4", "depthwise3", "kernel2", "bias1", "bn"} <= kinds
