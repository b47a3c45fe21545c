"""End-to-end search runs on shrunk configs (digits, a 1-cell supernet)."""

import contextlib
import importlib.util
import io
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
    "curves.png",
    "top_architectures.json",
    "summary.json",
    "log.txt",
]


def _metrics(path):
    out = []
    for line in open(path / "metrics.jsonl"):
        rec = json.loads(line)
        rec.pop("steps_per_s", None)
        rec.pop("compile_s", None)
        out.append(rec)
    return out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "env.nope=1"], "unknown config key 'env.nope'"),
        (["--set", "envnum_envs"], "KEY=VALUE"),
        (["--variant", "disc-ckpt-acc"], "needs a pre-trained supernet"),
        (
            ["--variant", "cont-acc-step", "--supernet-ckpt", "/nonexistent/x"],
            "no such folder",
        ),
        (["--set", "env.reward=bogus"], "env.reward must be one of"),
        (["--num-envs", "0"], "--num-envs: env.num_envs must be an integer >= 1"),
        (["--num-envs", "x"], "got 'x'"),
        (["--space", "s9"], "--space: supernet.space must be one of"),
        (["--compat", "torch"], "compat must be one of ['dartsrl']"),
        (["--set", "supernet.channels=5"], "even number"),
        (["--preset", "quick", "--devices", "3"], "must divide the number of envs"),
        (["--resume", "/nonexistent/run"], "no config.json"),
        (["--resume", "/x", "--out", "/y"], "drop --out"),
        (["--dataset", "npz:/no/such.npz"], ".npz"),
    ],
)
def test_bad_input_is_refused_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    if "--resume" not in argv:
        argv = argv + ["--out", str(out)]
    assert search.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--variant", "nope"], ["--preset", "nope"]])
def test_bad_choice_is_an_argparse_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        search.main(argv)
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cont_refuses_nwot(tmp_path, capsys):
    argv = ["--variant", "cont-acc-step", "--supernet-ckpt", str(tmp_path)]
    assert search.main(argv + ["--set", "env.reward=nwot"]) == 2
    assert "cannot use the nwot reward" in capsys.readouterr().err


def test_missing_cifar_says_how_to_prepare_it(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.chdir(tmp_path)
    assert search.main(["--data-dir", str(tmp_path / "tfds")]) == 2
    err = capsys.readouterr().err
    assert "python -m jaxdarts.data prepare --dataset cifar10" in err
    assert "--preset quick" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 10
    assert not (tmp_path / "runs").exists()  # no run folder was created


def test_print_config_explains_and_validates(capsys):
    assert search.main(["--preset", "quick", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "env.sentinel" in out and "softmax is one-hot" in out
    assert "env.lam" in out and "supernet.layers            = 3" in out
    assert search.main(["--print-config", "--set", "env.lam=-1"]) == 2
    assert "env.lam must be" in capsys.readouterr().err


def test_help_shows_default_preset_and_dataset(capsys):
    with pytest.raises(SystemExit):
        search.main(["--help"])
    out = capsys.readouterr().out
    assert "paper (default): dataset cifar10" in out and "quick: dataset digits" in out
    for flag in search.FLAGS:
        assert flag in out
    parser, _ = search.build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings


def test_presets_and_variants_resolve():
    for v in search.VARIANTS:
        cfg = search.make_config(v, "paper", **{"supernet.checkpoint": "x"})
        env_cfg, ppo, n = search.resolve(cfg)
        assert ppo.n_steps == 2048 and n == 1
        assert cfg["run"]["total_steps"] == (
            1_000_000 if v.startswith("disc") else 250_000
        )
        assert env_cfg.weight_step_period == 5
        assert env_cfg.crop_pad == 4 and env_cfg.net.num_classes == 10
    cfg = search.make_config(
        "cont-acc-step", **{"supernet.checkpoint": "x", "compat": "dartsrl"}
    )
    env_cfg, _, _ = search.resolve(cfg)
    assert env_cfg.weight_step_period == 1 and env_cfg.net.swap_cells


def test_setup_takes_classes_and_crop_from_the_data():
    from jaxdarts import build

    cfg = search.make_config("disc-nwot", "quick", **{"supernet.layers": 1})
    setup = build.search_setup(cfg)
    assert setup.env.crop_pad == 1  # 8x8 digits
    assert setup.env.net.num_classes == setup.dataset.num_classes == 10
    assert setup.steps_per_update == 256
    assert jax.tree.leaves(setup.env_params.variables)[0].shape[0] == 1  # seeds


HAVE_TB = importlib.util.find_spec("tensorboardX") is not None
STDOUT: dict[str, str] = {}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    argv = TINY + ["--out", str(out)] + (["--tensorboard"] if HAVE_TB else [])
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert search.main(argv) == 0
    STDOUT["straight"] = text.getvalue()
    return out


def test_end_summary_is_printed(straight):
    text = STDOUT["straight"]
    assert "compiling the search program" in text
    # the final rollouts' program was compiled alongside the first chunk
    assert "playing the final policy rollouts" in text
    assert "compiling and playing" not in text
    summary = text[text.index("search finished in") :]
    for word in ("genotype", "its reward", "at the start", "wall time", str(straight)):
        assert word in summary
    genotype = json.load(open(straight / "genotype.json"))["genotype"]
    assert genotype in summary


@pytest.mark.skipif(not HAVE_TB, reason="the tensorboard extra is not installed")
def test_tensorboard_events_are_written(straight):
    assert list((straight / "tb").glob("events.out.tfevents.*"))


def test_disc_run_folder(straight):
    for name in RUN_FILES:
        assert (straight / name).exists(), name
    g = json.load(open(straight / "genotype.json"))
    assert set(g) >= {"normal", "normal_concat", "reduce", "reduce_concat", "space"}
    assert g["space"] == "darts" and len(g["normal"]) == 8
    assert g["genotype"].startswith("Genotype(normal=[")
    metrics = _metrics(straight)
    assert [m["update"] for m in metrics] == [1, 2, 3, 4]
    raw = [json.loads(line) for line in open(straight / "metrics.jsonl")]
    assert all(r["steps_per_s"] > 0 for r in raw)
    assert raw[0]["compile_s"] > 0 and raw[2]["compile_s"] == 0  # 2 updates a chunk
    summary = json.load(open(straight / "summary.json"))
    assert summary["timesteps"] == 512 and summary["compile_s"] > 0
    (seed,) = summary["seeds"]
    assert seed["genotype"] == g["genotype"]
    assert seed["reward_mean_start"] == metrics[0]["reward_mean"]
    assert seed["reward_mean_end"] == metrics[-1]["reward_mean"]
    assert (straight / "curves.png").stat().st_size > 1000
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


def test_resume_flags_may_change_only_some_keys(straight, capsys):
    before = (straight / "metrics.jsonl").read_text()
    assert search.main(["--resume", str(straight), "--set", "env.batch_size=8"]) == 2
    err = capsys.readouterr().err
    assert "env.batch_size: saved 16 != given 8" in err
    assert (straight / "metrics.jsonl").read_text() == before


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
    assert search.main(TINY + ["--out", str(out)]) == 130
    assert [m["update"] for m in _metrics(out)] == [1, 2]
    assert (out / "curves.png").exists()
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
    """A cont-acc-grad-step search through the CLI (search space s2, 2 ops per
    edge: a small program, a quick compile), 2 updates in one chunk."""
    from jaxdarts import checkpoint as ckpt
    from jaxdarts.data import load_dataset
    from jaxdarts.supernet import Supernet, SupernetConfig

    ds = load_dataset("digits")
    net = Supernet(SupernetConfig(space="s2", channels=4, layers=1, num_classes=10))
    variables = net.init(jax.random.key(3), ds.image_shape)
    meta = {
        "format": ckpt.SUPERNET_FORMAT,
        "space": "s2",
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
    ckpt.save_supernet(tmp_path / "pre" / "supernet", variables, meta)
    out = tmp_path / "cont"
    argv = TINY + [
        "--variant",
        "cont-acc-grad-step",
        "--supernet-ckpt",
        str(tmp_path / "pre"),
        "--space",
        "s2",
        "--set",
        "run.total_steps=256",
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
    assert len(m) == 2 and all("std" in r for r in m)
    assert 0.0 <= m[-1]["reward_mean"] <= 1.0  # accuracy reward
