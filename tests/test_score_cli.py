"""``python -m jaxdarts.score``: end to end on digits with a tiny supernet, and its
input errors, which must come before anything is compiled.

Every scoring run here uses the same tiny supernet (darts, C=4, 2 cells, 8x8x1
digits), 3 genotypes and a batch of 16, so the jitted scorer compiles once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import score, scoring
from jaxdarts.genotypes import (
    genotype_edge_ops,
    get_genotype,
    save_genotype_json,
    to_darts_string,
)
from jaxdarts.rewards import RewardConfig
from jaxdarts.spaces import NUM_EDGES, get_space
from jaxdarts.supernet import SupernetConfig, get_supernet

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--preset", "quick", "--channels", "4", "--layers", "2", "--batch-size", "16",
    "--impl", "xla",
]  # fmt: skip
QUIET = ["--no-compile-cache", "--no-progress"]
# A full assignment: one op per edge (null = none), as a discrete episode ends.
FULL_NORMAL = [
    "sep_conv_3x3", None, "dil_conv_3x3", "skip_connect", "max_pool_3x3",
    "avg_pool_3x3", "sep_conv_5x5", "dil_conv_5x5", "none", "sep_conv_3x3",
    "skip_connect", "dil_conv_3x3", "sep_conv_5x5", "max_pool_3x3",
]  # fmt: skip
FULL_REDUCE = ["skip_connect", "max_pool_3x3"] * (NUM_EDGES // 2)


def run_main(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = score.main(argv)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("score")
    full = d / "full.json"
    full.write_text(
        json.dumps(
            {"normal_ops": FULL_NORMAL, "reduce_ops": FULL_REDUCE, "space": "darts"}
        )
    )
    geno = d / "geno.json"
    save_genotype_json(geno, get_genotype("disc-acc"), space="darts")
    return {"dir": d, "full": str(full), "geno": str(geno)}


@pytest.fixture(scope="module")
def genotypes(files):
    return ["disc-nwot", files["full"], files["geno"]]


@pytest.fixture(scope="module")
def cli_run(files, genotypes):
    out = files["dir"] / "scores.json"
    argv = [a for g in genotypes for a in ("--genotype", g)]
    rc, stdout = run_main([*argv, *TINY, "--seeds", "2", *QUIET, "--json", str(out)])
    return rc, stdout, json.loads(out.read_text())


def tiny_net():
    return get_supernet(SupernetConfig(channels=4, layers=2, impl="xla"))


def batch_of(seed: int, split_seed: int, size: int = 16):
    """The documented batch: default_rng(seed) draws from the validation half."""
    from jaxdarts.data import load_dataset, normalize, split_indices

    ds = load_dataset("digits")
    pool = split_indices(len(ds.train_labels), split_seed)[1]
    idx = np.sort(np.random.default_rng(seed).choice(pool, size, replace=False))
    return (
        normalize(ds.train_images[idx], ds.mean, ds.std),
        jnp.asarray(ds.train_labels[idx], jnp.int32),
    )


def rescore(records, variables, seed: int, split_seed: int):
    """Scores the records' assignments again with the cached scorer."""
    net = tiny_net()
    cn, cr = zip(
        *(net.choices_from_ops(r["normal_ops"], r["reduce_ops"]) for r in records),
        strict=True,
    )
    scorer = score.make_scorer(net, RewardConfig())
    images, labels = batch_of(seed, split_seed)
    key = jax.random.fold_in(jax.random.key(seed), 1)
    r, ok = scorer(variables, jnp.stack(cn), jnp.stack(cr), images, labels, key)
    return np.asarray(r), np.asarray(ok)


# ------------------------------------------------------------------ end to end


def test_cli_prints_a_table_and_writes_records(cli_run, genotypes, files):
    rc, stdout, result = cli_run
    assert rc == 0
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("genotype"))
    assert lines[header].split() == ["genotype", "reward", "mean", "std", "n"]
    rows = [line.split() for line in lines[header + 2 : header + 2 + len(genotypes)]]
    assert [r[0] for r in rows] == genotypes
    assert all(r[1] == "nwot" and r[4] == "2" for r in rows)

    records = result["records"]
    assert [r["genotype"] for r in records] == genotypes
    for rec in records:
        assert {"genotype", "reward", "mean", "std", "scores", "n"} <= set(rec)
        assert rec["reward"] == "nwot" and rec["n"] == 2
        assert len(rec["scores"]) == 2 and rec["valid"] == [True, True]
        assert np.isfinite(rec["scores"]).all() and min(rec["scores"]) > 10
        assert rec["mean"] == pytest.approx(np.mean(rec["scores"]))
        assert rec["std"] == pytest.approx(np.std(rec["scores"]))
        assert rec["scores"][0] != rec["scores"][1]  # other init, other batch
    settings = result["settings"]
    assert settings["batch_size"] == 16 and settings["seeds"] == 2
    assert (settings["channels"], settings["layers"], settings["space"]) == (
        4,
        2,
        "darts",
    )
    assert settings["bn_train"] is False

    # the published genotype: its 8 edges carry their ops, the other 6 carry none
    normal, reduce = genotype_edge_ops(get_genotype("disc-nwot"))
    assert records[0]["normal_ops"] == [o or "none" for o in normal]
    assert records[0]["reduce_ops"] == [o or "none" for o in reduce]
    assert records[0]["normal_ops"].count("none") == 6
    # the full assignment is scored as it is (null = none)
    assert records[1]["normal_ops"] == [o or "none" for o in FULL_NORMAL]
    assert records[1]["reduce_ops"] == FULL_REDUCE


def test_seed_i_initialises_the_supernet_and_picks_the_batch(cli_run):
    records = cli_run[2]["records"]
    net = tiny_net()
    variables = net.init(jax.random.key(1), (8, 8, 1))
    rewards, ok = rescore(records, variables, seed=1, split_seed=1)
    assert ok.all()
    np.testing.assert_allclose(rewards, [r["scores"][1] for r in records], rtol=1e-6)


@pytest.fixture(scope="module")
def ckpt(files):
    """A supernet folder as jaxdarts.pretrain writes it: weights from key(5),
    split seed 7."""
    from jaxdarts import checkpoint as ckpt
    from jaxdarts.data import load_dataset

    net = tiny_net()
    variables = net.init(jax.random.key(5), (8, 8, 1))
    ds = load_dataset("digits")
    meta = {
        "format": ckpt.SUPERNET_FORMAT,
        "space": "darts",
        "channels": 4,
        "layers": 2,
        "num_classes": 10,
        "stem_multiplier": 3,
        "swap_cells": False,
        "eps": 1e-3,
        "image_shape": [8, 8, 1],
        "dataset": "digits",
        "mean": list(ds.mean),
        "std": list(ds.std),
        "seed": 7,
        "split_seed": 7,
    }
    path = files["dir"] / "pre"
    ckpt.save_supernet(path / "supernet", variables, meta)
    return path, variables


def test_supernet_checkpoint(cli_run, files, genotypes, ckpt):
    path, variables = ckpt
    argv = [a for g in genotypes for a in ("--genotype", g)]
    out = files["dir"] / "ckpt.json"
    common = ["--preset", "quick", "--supernet-ckpt", str(path), "--layers", "2"]
    common += ["--batch-size", "16"]
    rc, _ = run_main(
        [*argv, *common, "--impl", "xla", "--seeds", "2", *QUIET, "--json", str(out)]
    )
    assert rc == 0
    records = json.loads(out.read_text())["records"]
    # the checkpoint's weights for every seed; seed i picks the batch from the
    # checkpoint's held-out half (split_seed 7)
    for s in (0, 1):
        rewards, _ = rescore(records, variables, seed=s, split_seed=7)
        np.testing.assert_allclose(
            rewards, [r["scores"][s] for r in records], rtol=1e-6
        )
    assert records[0]["scores"] != cli_run[2]["records"][0]["scores"]


# ------------------------------------------------------------------ errors


@pytest.fixture
def no_compile(monkeypatch):
    """Fails any test that reaches the jitted scorer."""

    def refuse(*a, **k):
        raise AssertionError("reached the compile step")

    monkeypatch.setattr(scoring, "make_scorer", refuse)


def _bad_files(d: Path) -> dict[str, str]:
    short = d / "short.json"
    short.write_text(json.dumps({"normal_ops": ["none"] * 13, "reduce_ops": ["none"]}))
    badop = d / "badop.json"
    ops = ["sep_conv_3x3"] * NUM_EDGES
    badop.write_text(
        json.dumps({"normal_ops": ops[:-1] + ["conv_3x3"], "reduce_ops": ops})
    )
    other = d / "other.json"
    other.write_text(json.dumps({"normal_ops": ops, "reduce_ops": ops, "space": "s2"}))
    notjson = d / "notjson.json"
    notjson.write_text("{normal")
    return {
        "SHORT": str(short),
        "BADOP": str(badop),
        "OTHER": str(other),
        "NOTJSON": str(notjson),
    }


ERRORS = [
    (["--genotype", "no-such-genotype"], "unknown genotype 'no-such-genotype'"),
    (["--genotype", "disc-nwot", "--reward", "accuracy"], "reward.kind must be one of"),
    (["--genotype", "disc-nwot", "--space", "s9"], "supernet.space must be one of"),
    (["--genotype", "missing.json"], "'missing.json' does not exist"),
    (["--genotype", "disc-nwot", "--space", "s2"], "not in search space 's2'"),
    (["--genotype", "disc-nwot", "--batch-size", "1"], "must be >= 2 for the nwot"),
    (["--genotype", "disc-nwot", "--batch-size", "0", "--reward", "acc"], ">= 1"),
    (["--genotype", "disc-nwot", "--batch-size", "100000"], "larger than the 719"),
    (["--genotype", "disc-nwot", "--seeds", "0"], "--seeds: seeds must be"),
    (["--genotype", "disc-nwot", "--nwot-flavour", "new"], "reward.nwot_flavour"),
    (["--genotype", "disc-nwot", "--path", "sparse"], "reward.path must be one of"),
    (["--genotype", "disc-nwot", "--compat", "torch"], "compat must be one of"),
    (["--genotype", "disc-nwot", "--channels", "5"], "even number"),
    (["--genotype", "disc-nwot", "--impl", "fast"], "supernet.impl must be one of"),
    (["--genotype", "SHORT"], "list of 14 op names"),
    (["--genotype", "BADOP"], "'conv_3x3' on normal edge 13 is not in search space"),
    (["--genotype", "OTHER", "--space", "darts"], "the file is for space 's2'"),
    (["--genotype", "disc-nwot", "--genotype", "OTHER"], "not in search space 's2'"),
    (["--genotype", "NOTJSON"], "not a valid JSON file"),
    (["--genotype", "disc-nwot", "--data", "missing.npz"], "No such .npz file"),
    (["--genotype", "disc-nwot", "--data", "x.npz", "--dataset", "digits"], "not both"),
    (["--genotype", "disc-nwot", "--supernet-ckpt", "nowhere"], "does not exist"),
    ([], "--genotype"),
]


@pytest.mark.parametrize("argv,message", ERRORS, ids=[m for _, m in ERRORS])
def test_bad_input_fails_before_compiling(argv, message, tmp_path, capsys, no_compile):
    bad = _bad_files(tmp_path)
    argv = [bad.get(a, a) for a in argv]
    cwd = os.getcwd()
    os.chdir(tmp_path)  # relative paths (missing.json, nowhere) resolve here
    try:
        rc = score.main(["--preset", "quick", *argv, *QUIET])
    finally:
        os.chdir(cwd)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_checkpoint_conflicts_fail_before_compiling(ckpt, capsys, no_compile):
    argv = ["--genotype", "disc-nwot", "--supernet-ckpt", str(ckpt[0])]
    assert score.main([*argv, "--channels", "8", *QUIET]) == 2
    assert "trained for channels 4" in capsys.readouterr().err
    npz = "npz:" + str(ckpt[0] / "rgb.npz")
    assert score.main([*argv, "--dataset", npz, *QUIET]) == 2
    assert "No such .npz file" in capsys.readouterr().err


def test_module_entry_point():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxdarts.score", "--genotype", "nope", *QUIET],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown genotype 'nope'" in proc.stderr


# ------------------------------------------------------------------ library


def test_score_config_through_the_engine(capsys):
    from jaxdarts.configs.score import batch_size

    from jaxdarts.config import ConfigError, load

    cfg = load("score")
    assert cfg["data"]["dataset"] == "cifar10" and batch_size(cfg) == 64
    original = load("score", sets=["reward.nwot_flavour=original"])
    assert batch_size(original) == 128
    assert batch_size(load("score", sets=["reward.batch_size=32"])) == 32
    assert load("score", sets=["supernet.impl=loop"])["supernet"]["impl"] == "loop"
    with pytest.raises(ConfigError, match="applies to the nwot reward only"):
        load("score", sets=["reward.kind=acc", "reward.nwot_flavour=original"])
    quick = load("score", preset="quick")
    assert quick["supernet"]["layers"] == 3 and quick["data"]["dataset"] == "digits"
    assert score.main(["--preset", "quick", "--print-config"]) == 0
    assert "reward.batch_size" in capsys.readouterr().out


def test_missing_cifar_is_a_short_error(tmp_path, capsys, no_compile):
    pytest.importorskip("tensorflow_datasets")
    argv = ["--genotype", "disc-nwot", "--data-dir", str(tmp_path), *QUIET]
    assert score.main(argv) == 2
    err = capsys.readouterr().err
    assert "jaxdarts.data prepare --dataset cifar10" in err and "Traceback" not in err


def test_resolve_architecture_forms(files):
    g = get_genotype("disc-nwot")
    by_name = score.resolve_architecture("disc-nwot")
    by_string = score.resolve_architecture(to_darts_string(g))
    by_object = score.resolve_architecture(g)
    assert by_name.normal_ops == by_string.normal_ops == by_object.normal_ops
    assert by_string.label.startswith("Genotype(") and len(by_string.label) <= 60
    full = score.resolve_architecture(files["full"])
    assert full.space == "darts" and full.normal_ops[1] == "none"
    geno = score.resolve_architecture(files["geno"])
    assert geno.space == "darts" and geno.label == files["geno"]


def test_check_ops_is_per_edge_in_s1():
    s1 = get_space("s1")
    ok = score.Architecture(
        "ok", tuple(e[1] for e in s1.normal), tuple(e[0] for e in s1.reduce)
    )
    score.check_ops(ok, s1)
    score.check_ops(score.Architecture("none", ("none",) * 14, ("none",) * 14), s1)
    # edge 0 of the S1 normal cell offers skip_connect and dil_conv_3x3 only
    bad = score.Architecture(
        "bad", ("dil_conv_5x5",) + ok.normal_ops[1:], ok.reduce_ops
    )
    with pytest.raises(ValueError, match="normal edge 0"):
        score.check_ops(bad, s1)
