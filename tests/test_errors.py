"""The catalogue of bad inputs and faults: each gets one clear message, exit code 2,
and nothing written (no run folder made, no existing file changed).

To add a case, add a row ``"argv | message fragment"`` to its command's block of
``CASES``. ``argv`` may name the prepared places below with ``{name}``; ``{out}``
is a fresh path that must still not exist afterwards. Every case runs in-process
through the command's ``main(argv)`` and fails before any compile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdarts import config as config_lib
from jaxdarts import pretrain, score, search, train

MAINS = {
    "search": search.main,
    "score": score.main,
    "train": train.main,
    "pretrain": pretrain.main,
}

#: A search config that is tiny (1 cell, 4 envs): nothing here gets to compile it.
TINY = "--preset quick --set supernet.layers=1 --set env.num_envs=4"
SEARCH_RUN_SETS = {
    "supernet.layers": 1,
    "env.num_envs": 4,
    "run.total_steps": 512,
}
QUICK = "--preset quick"
PAIRS = "('sep_conv_3x3', 0), ('sep_conv_3x3', 1), " * 4
GENOTYPE_TYPO = (
    f"Genotype(normal=[{PAIRS}], normal_concatt=[2, 3, 4, 5], reduce=[{PAIRS}], "
    "reduce_concat=[2, 3, 4, 5])"
)
SAME_INPUT = "('sep_conv_3x3', 0), ('skip_connect', 0), " + PAIRS.split(", ", 4)[-1]
GENOTYPE_SAME_INPUT = (
    f"Genotype(normal=[{SAME_INPUT}], normal_concat=[2, 3, 4, 5], "
    f"reduce=[{PAIRS}], reduce_concat=[2, 3, 4, 5])"
)


def _cases(command: str, base: str, *rows: str) -> list[tuple[str, str, str]]:
    """The cases of one command: ``(command, argv, message fragment)``.

    Args:
      command: ``search``, ``score``, ``train`` or ``pretrain``.
      base: the arguments every row starts with (a small config).
      *rows: ``"argv | message fragment"``, one per case.
    """
    cases = []
    for row in rows:
        argv, fragment = row.split(" | ")
        cases.append((command, f"{base} {argv}".strip(), fragment))
    return cases


# Every case exits with status 2.
CASES = [
    *_cases(
        "search",
        TINY,
        # data
        "--dataset nosuchds --out {out} | Unknown dataset 'nosuchds'",
        "--dataset cifar10 --data-dir {empty} --out {out} | "
        "python -m jaxdarts.data prepare --dataset cifar10",
        "--dataset mnist --data-dir {empty} --out {out} | "
        "python -m jaxdarts.data prepare --dataset mnist",
        # devices
        "--devices 3 --out {out} | must divide the number of envs",
        # config values: named key, type, range, one rule
        "--set env.batch_size=abc --out {out} | env.batch_size must be an integer",
        "--set env.batch_size=4000 --out {out} | "
        "larger than the validation half of digits",
        "--set env.batch_size=1 --print-config | >= 2 for the nwot reward",
        "--set ppo.learning_rate=-1 --print-config | "
        "ppo.learning_rate must be a finite number > 0",
        "--set ppo.learning_rate=nan --print-config | got nan",
        "--set ppo.gamma=5 --print-config | "
        "ppo.gamma must be a finite number >= 0 and <= 1",
        # pre-trained supernets
        "--supernet-ckpt {sn_json} --out {out} | supernet.json is not valid JSON",
        "--supernet-ckpt {sn_trunc} --out {out} | "
        "cannot be read (damaged or incomplete files",
        "--supernet-ckpt {sn_manifest} --out {out} | "
        "cannot be read (damaged or incomplete files",
        # --out
        "--out {file} | is an existing file, not a folder",
        "--out {file} --overwrite | is an existing file",
        "--out {file}/x | is a file, so no folder can be made",
        "--out {notrun} | already exists and is not empty",
        "--out {notrun} --overwrite | not a jaxdarts run folder",
        "--out {srun} --overwrite --dataset nosuchds | Unknown dataset",
    ),
    *_cases(
        "search",
        QUICK,
        "--num-envs 64 --devices 64 --out {out} | asked for 64 devices but only",
        "--supernet-ckpt {sn} --out {out} | "
        "To use this supernet: --set supernet.layers=1",
    ),
    *_cases(
        "search",
        "",
        "--resume {pre} | python -m jaxdarts.pretrain --resume",
        "--resume {notrun} | not a run folder",
        "--resume {srun} --num-envs 16 | env.num_envs: saved 4 != given 16",
        "--resume {srun} --total-steps 256 | may only grow",
        "--resume {srun} | has no checkpoint to continue from",
        "--resume {srun} --total-steps 8192 | no checkpoint",
    ),
    *_cases(
        "score",
        f"{QUICK} --genotype",
        "disc-nwot --reward nwot --set reward.batch_size=1 | reward.batch_size",
        f"{GENOTYPE_SAME_INPUT!r} | need different inputs",
        "disc-nwot --supernet-ckpt {sn} | "
        "To use this supernet: --set supernet.layers=1",
        "disc-nwot --supernet-ckpt {sn_json} | supernet.json is not valid JSON",
        "disc-nwot --layers 1 --supernet-ckpt {sn_trunc} | "
        "cannot be read (damaged or incomplete files",
        "disc-nwot --json {file}/x.json | is a file",
        "disc-nwot --json {empty} | is a folder",
    ),
    *_cases(
        "train",
        QUICK,
        "--genotype disc-nwot --dataset nosuchds --out {out} | "
        "Unknown dataset 'nosuchds'",
        "--genotype disc-nwot --devices 32 --out {out} | asked for 32 devices but only",
        f"--out {{out}} --genotype {GENOTYPE_TYPO!r} | "
        "unknown field(s) ['normal_concatt']",
        f"--out {{out}} --genotype {GENOTYPE_SAME_INPUT!r} | need different inputs",
        "--genotype disc-nwot --out {file} | is an existing file",
        "--genotype disc-nwot --out {file}/x | is a file",
    ),
    *_cases("train", "", "--resume {srun} | python -m jaxdarts.search --resume"),
    *_cases(
        "pretrain",
        QUICK,
        "--dataset mnist --data-dir {empty} --out {out} | "
        "python -m jaxdarts.data prepare --dataset mnist",
        "--devices 99 --out {out} | --devices 99",
        "--out {notrun} --overwrite | not a jaxdarts run",
        "--out {srun} --overwrite --dataset nosuchds | Unknown dataset",
    ),
    *_cases(
        "pretrain",
        "",
        "--resume {srun} | python -m jaxdarts.search --resume",
        "--resume {file} | not a run folder",
    ),
]


def _tiny_supernet(folder: Path) -> None:
    from jaxdarts import checkpoint as ckpt
    from jaxdarts.data import load_dataset
    from jaxdarts.supernet import Supernet, SupernetConfig

    ds = load_dataset("digits")
    cfg = SupernetConfig(channels=4, layers=1, num_classes=10)
    variables = jax.jit(lambda k: Supernet(cfg).init(k, ds.image_shape))(
        jax.random.key(0)
    )
    meta = {"format": ckpt.SUPERNET_FORMAT, "space": "darts", "channels": 4,
            "layers": 1, "num_classes": 10, "stem_multiplier": 3,
            "swap_cells": False, "eps": 1e-3, "image_shape": list(ds.image_shape),
            "dataset": "digits", "seed": 0, "split_seed": 0}  # fmt: skip
    ckpt.save_supernet(folder / "supernet", variables, meta)


def _largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=os.path.getsize)


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    from jaxdarts.runs import RunDir

    lib = tmp_path_factory.mktemp("lib")
    (lib / "empty").mkdir()
    (lib / "file").write_text("not a folder\n")
    (lib / "notrun").mkdir()
    (lib / "notrun" / "thesis.tex").write_text("precious\n")
    cfg = config_lib.load("search", preset="quick", overrides=SEARCH_RUN_SETS)
    RunDir.create(lib / "srun", cfg)
    (lib / "srun" / "metrics.jsonl").write_text('{"update": 1}\n')
    RunDir.create(lib / "pre", config_lib.load("pretrain", preset="quick"))
    _tiny_supernet(lib / "sn")
    for name in ("sn_json", "sn_trunc", "sn_manifest"):
        shutil.copytree(lib / "sn", lib / name)
    (lib / "sn_json/supernet/supernet.json").write_text('{"format": "jaxd')
    big = _largest_file(lib / "sn_trunc/supernet")
    big.write_bytes(big.read_bytes()[: os.path.getsize(big) // 2])
    for m in (lib / "sn_manifest/supernet").rglob("manifest.ocdbt"):
        m.unlink()
    return {p.name: p for p in lib.iterdir()}


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(
    "command, argv, fragment",
    CASES,
    ids=[f"{c[0]}:{i}" for i, c in enumerate(CASES)],
)
def test_bad_input_is_refused_and_nothing_is_written(
    places, tmp_path, capsys, command, argv, fragment
):
    import shlex

    lib = places["empty"].parent
    before = _snapshot(lib)
    out = tmp_path / "out"
    names = {k: str(v) for k, v in places.items()}
    args = [a.format(out=out, **names) for a in shlex.split(argv)]
    assert MAINS[command](args) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err
    assert not out.exists()
    assert _snapshot(lib) == before, "an existing file or folder was changed"
    assert not [p for p in lib.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------ file-system checks


def test_overwrite_swaps_the_new_run_in_and_keeps_the_old_on_failure(
    tmp_path, monkeypatch
):
    from jaxdarts import runs

    old = tmp_path / "run"
    runs.RunDir.create(old, {"a": 1})
    (old / "metrics.jsonl").write_text('{"update": 1}\n')
    calls = []

    def failing_write(path, obj):
        calls.append(path)
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(runs, "atomic_write_json", failing_write)
        with pytest.raises(OSError, match="disk full"):
            runs.RunDir.create(old, {"a": 2}, overwrite=True)
    assert calls and calls[0].parent != old  # written beside, not into, the old run
    assert json.loads((old / "config.json").read_text()) == {"a": 1}
    assert (old / "metrics.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    runs.RunDir.create(old, {"a": 2}, overwrite=True)
    assert json.loads((old / "config.json").read_text()) == {"a": 2}
    assert not (old / "metrics.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_of_an_empty_folder_and_refusals(tmp_path):
    from jaxdarts import runs

    (tmp_path / "empty").mkdir()
    runs.RunDir.create(tmp_path / "empty", {"a": 1})
    assert (tmp_path / "empty" / "config.json").is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="not a jaxdarts run folder"):
        runs.RunDir.create(tmp_path / "other", {"a": 1}, overwrite=True)
    assert (tmp_path / "other" / "data.csv").read_text() == "1,2\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused_before_any_work(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        argv = [*TINY.split(), "--out", str(ro / "run")]
        assert search.main(argv) == 2
        assert "cannot write in" in capsys.readouterr().err
        argv = ["--preset", "quick", "--genotype", "disc-nwot", "--json"]
        assert score.main([*argv, str(ro / "s.json")]) == 2
        assert "cannot write in" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)
    assert list(ro.iterdir()) == []


def _damage(step_dir: Path, how: str) -> None:
    if how == "truncate":
        big = _largest_file(step_dir)
        big.write_bytes(big.read_bytes()[:7])
    elif how == "bitflip":
        for f in step_dir.rglob("*"):
            if f.is_file() and f.parent.name == "d":
                data = bytearray(f.read_bytes())
                data[len(data) // 2] ^= 0xFF
                f.write_bytes(bytes(data))
    elif how == "manifest":
        for f in step_dir.rglob("manifest.ocdbt"):
            f.unlink()
    elif how == "metadata":
        for f in step_dir.rglob("metadata"):  # the saved tree's description
            f.unlink()


@pytest.mark.parametrize("how", ["truncate", "bitflip", "manifest", "metadata"])
def test_resume_falls_back_to_the_newest_checkpoint_that_restores(
    tmp_path, caplog, how
):
    from jaxdarts.checkpoint import (
        Checkpointer,
        CorruptCheckpointError,
        restore_newest_valid,
    )

    state = {"w": np.arange(4096, dtype=np.float32), "n": np.int32(0)}
    ckpt = Checkpointer(tmp_path / "checkpoints")
    for step in (1, 2):
        ckpt.save(step, {"w": state["w"] + step, "n": np.int32(step)})
    ckpt.close()
    _damage(tmp_path / "checkpoints" / "2", how)
    log = logging.getLogger("test_errors")
    with caplog.at_level(logging.WARNING, "test_errors"):
        step, got = restore_newest_valid(
            Checkpointer(tmp_path / "checkpoints"), state, warn=log.warning
        )
    assert step == 1 and int(got["n"]) == 1
    np.testing.assert_array_equal(np.asarray(got["w"]), state["w"] + 1)
    text = caplog.text
    assert str(tmp_path / "checkpoints" / "2") in text and "falling back" in text
    _damage(tmp_path / "checkpoints" / "1", how)
    with pytest.raises(CorruptCheckpointError, match="no checkpoint in .* can be"):
        restore_newest_valid(Checkpointer(tmp_path / "checkpoints"), state)


def test_no_checkpoint_at_all_is_none(tmp_path):
    from jaxdarts.checkpoint import Checkpointer, restore_newest_valid

    assert restore_newest_valid(Checkpointer(tmp_path / "none"), {"a": 1}) is None
    assert not (tmp_path / "none").exists()


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_mostly_invalid_rewards_warn_once_per_update():
    from jaxdarts.searching import _warn_invalid, log

    seen = _Records()
    log.addHandler(seen)
    try:
        _warn_invalid({"update": 3, "invalid_rewards": 4, "num_episodes": 4})
        _warn_invalid({"update": 4, "invalid_rewards": 1, "num_episodes": 4})
        _warn_invalid({"update": 5, "invalid_rewards": [0, 3], "num_episodes": [4, 4]})
    finally:
        log.removeHandler(seen)
    warnings = [r.getMessage() for r in seen.records]
    assert len(warnings) == 2
    assert "update 3: 4 of 4 rewards were invalid" in warnings[0]
    assert "singular NWOT kernel" in warnings[0]
    assert "update 5 (seed 1): 3 of 4" in warnings[1]
