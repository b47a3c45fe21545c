"""End-to-end search runs on shrunk configs (digits, a 1-cell supernet)."""

import json

import jax
import pytest

from jaxdarts import search

TINY = [
    "--preset",
    "quick",
    "--set",
    "supernet.layers=1",
    "--set",
    "env.num_envs=4",
    "--set",
    "env.batch_size=16",
    "--set",
    "ppo.transitions_per_update=128",
    "--set",
    "run.updates_per_chunk=2",
    "--set",
    "run.checkpoint_every=1",
    "--set",
    "run.total_steps=512",
]
RUN_FILES = [
    "config.json",
    "env.json",
    "metrics.jsonl",
    "genotype.json",
    "genotype.txt",
    "cells.png",
    "cells.svg",
    "cells-stochastic.png",
    "top_architectures.json",
    "summary.json",
    "log.txt",
]


def _metrics(path):
    out = []
    for line in open(path / "metrics.jsonl"):
        rec = json.loads(line)
        rec.pop("steps_per_s", None)
        out.append(rec)
    return out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variant", "nope"], "invalid choice"),
        (["--set", "env.nope=1"], "unknown config key 'env.nope'"),
        (["--set", "envnum_envs"], "KEY=VALUE"),
        (["--variant", "disc-ckpt-acc"], "needs a pre-trained supernet"),
        (
            ["--variant", "cont-acc-step", "--supernet-ckpt", "/nonexistent/x"],
            "no such folder",
        ),
        (["--set", 'env.reward="bogus"'], "unknown reward"),
        (["--set", "env.num_envs=0"], "num_envs"),
        (["--space", "s9"], "unknown search space"),
        (["--resume", "/nonexistent/run"], "no config.json"),
    ],
)
def test_bad_input_is_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        search.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cont_refuses_nwot(tmp_path, capsys):
    with pytest.raises(SystemExit):
        search.main(
            [
                "--variant",
                "cont-acc-step",
                "--supernet-ckpt",
                str(tmp_path),
                "--set",
                'env.reward="nwot"',
            ]
        )
    assert "nwot" in capsys.readouterr().err


def test_presets_and_variants_resolve():
    for v in search.VARIANTS:
        cfg = search.make_config(v, "paper", **{"supernet.checkpoint": "x"})
        env_cfg, ppo, n = search.resolve(cfg)
        assert ppo.n_steps == 2048 and n == 1
        assert cfg["run"]["total_steps"] == (
            1_000_000 if v.startswith("disc") else 250_000
        )
        assert env_cfg.weight_step_period == 5
    cfg = search.make_config(
        "cont-acc-step", **{"supernet.checkpoint": "x", "compat": "dartsrl"}
    )
    env_cfg, _, _ = search.resolve(cfg)
    assert env_cfg.weight_step_period == 1 and env_cfg.net.swap_cells


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    assert search.main(TINY + ["--out", str(out)]) == 0
    return out


def test_disc_run_folder(straight):
    for name in RUN_FILES:
        assert (straight / name).exists(), name
    g = json.load(open(straight / "genotype.json"))
    assert set(g) >= {"normal", "normal_concat", "reduce", "reduce_concat", "space"}
    assert g["space"] == "darts" and len(g["normal"]) == 8
    assert g["genotype"].startswith("Genotype(normal=[")
    metrics = _metrics(straight)
    assert [m["update"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        for key in (
            "reward_mean",
            "reward_min",
            "reward_max",
            "policy_loss",
            "value_loss",
            "entropy",
            "approx_kl",
        ):
            assert key in m
    top = json.load(open(straight / "top_architectures.json"))
    assert 1 <= len(top) <= 10
    assert top == sorted(top, key=lambda t: -t["reward"])
    assert (straight / "checkpoints").is_dir()


def test_existing_folder_is_not_overwritten(straight, capsys):
    before = (straight / "genotype.json").read_text()
    assert search.main(TINY + ["--out", str(straight)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (straight / "genotype.json").read_text() == before


def test_resume_refuses_changed_config(straight, tmp_path, capsys):
    run = tmp_path / "changed"
    import shutil

    shutil.copytree(straight, run)
    cfg = json.load(open(run / "config.json"))
    cfg["env"]["batch_size"] = 8
    json.dump(cfg, open(run / "config.json", "w"))
    from jaxdarts.runs import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="env.batch_size"):
        search.run(search.make_config("disc-nwot", "quick"), out=str(run), resume=True)


def test_interrupt_and_resume_is_bit_exact(straight, tmp_path, monkeypatch):
    import jaxdarts.runs as runs

    class StopAfterFirstChunk:
        requested = True

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(runs, "GracefulInterrupt", StopAfterFirstChunk)
    out = tmp_path / "interrupted"
    assert search.main(TINY + ["--out", str(out)]) == 0
    assert [m["update"] for m in _metrics(out)] == [1, 2]
    assert not (out / "genotype.json").exists()
    monkeypatch.undo()
    assert search.main(["--resume", str(out)]) == 0
    assert _metrics(out) == _metrics(straight)
    a = json.load(open(out / "genotype.json"))
    b = json.load(open(straight / "genotype.json"))
    assert a == b
    assert json.load(open(out / "top_architectures.json")) == json.load(
        open(straight / "top_architectures.json")
    )


def test_cont_variant_end_to_end(tmp_path):
    from jaxdarts import pretrain
    from jaxdarts.data import load_dataset
    from jaxdarts.supernet import Supernet, SupernetConfig

    ds = load_dataset("digits")
    net = Supernet(SupernetConfig(channels=4, layers=1, num_classes=10))
    variables = net.init(jax.random.key(3), ds.image_shape)
    meta = {
        "format": pretrain._META_FORMAT,
        "space": "darts",
        "channels": 4,
        "layers": 1,
        "num_classes": 10,
        "stem_multiplier": 3,
        "swap_cells": False,
        "eps": 1e-3,
        "image_shape": list(ds.image_shape),
        "dataset": "digits",
        "mean": list(ds.mean),
        "std": list(ds.std),
        "seed": 0,
        "split_seed": 0,
    }
    pretrain.save_supernet(tmp_path / "pre" / "supernet", variables, meta)
    out = tmp_path / "cont"
    argv = TINY + [
        "--variant",
        "cont-acc-grad-step",
        "--supernet-ckpt",
        str(tmp_path / "pre"),
        "--set",
        "env.sweeps=1",
        "--set",
        "env.frame_stack=2",
        "--set",
        "env.weight_step_period=1",
        "--out",
        str(out),
    ]
    assert search.main(argv) == 0
    for name in RUN_FILES:
        assert (out / name).exists(), name
    m = _metrics(out)
    assert len(m) == 4 and all("std" in r for r in m)
    assert 0.0 <= m[-1]["reward_mean"] <= 1.0  # accuracy reward
