"""Tests for jaxdarts.runs: run folders, config checks, metrics, host plumbing."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jaxdarts.runs import (
    ConfigMismatchError,
    GracefulInterrupt,
    RunDir,
    RunExistsError,
    config_diff,
    progress,
    setup_logging,
)

REPO = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 0,
    "env": {"action": "discrete", "num_envs": 4, "shape": (8, 8)},
    "ppo": {"lr": 3e-4, "clip": 0.2},
    "run": {"resume": None, "overwrite": False},
}


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_create_writes_config_and_env(tmp_path):
    run = RunDir.create(tmp_path / "runs" / "a", CONFIG)
    assert run.path == tmp_path / "runs" / "a"
    saved = json.loads((run.path / "config.json").read_text())
    assert saved == run.config
    assert saved["env"]["shape"] == [8, 8]  # resolved to JSON types
    env = json.loads((run.path / "env.json").read_text())
    for key in (
        "jaxdarts_version",
        "python",
        "versions",
        "backend",
        "device_count",
        "device_kinds",
        "hostname",
        "argv",
        "git",
        "time_utc",
    ):
        assert key in env, key
    for lib in ("jax", "jaxlib", "flax", "optax"):
        assert env["versions"][lib], lib
    assert env["backend"] == "cpu" and env["device_count"] >= 1
    assert "commit" in env["git"]
    assert env["argv"] == sys.argv


def test_create_refuses_existing_folder_untouched(tmp_path):
    old = tmp_path / "run"
    old.mkdir()
    (old / "metrics.jsonl").write_text('{"step": 1}\n')
    (old / "sub").mkdir()
    (old / "sub" / "x.bin").write_bytes(b"\x00\x01")
    before = _snapshot(old)
    with pytest.raises(RunExistsError) as e:
        RunDir.create(old, CONFIG)
    assert "--resume" in str(e.value) and "--overwrite" in str(e.value)
    assert str(old) in str(e.value)
    assert _snapshot(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_create_uses_existing_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    run = RunDir.create(tmp_path / "empty", CONFIG)
    assert (run.path / "config.json").is_file()


def test_overwrite_replaces_only_the_run(tmp_path):
    first = RunDir.create(tmp_path / "run", {"seed": 1})
    first.append_metrics({"step": 1, "loss": 1.0})
    (tmp_path / "neighbour").mkdir()
    (tmp_path / "neighbour" / "keep.txt").write_text("keep")
    run = RunDir.create(tmp_path / "run", CONFIG, overwrite=True)
    assert run.config["seed"] == 0
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "env.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neighbour", "run"]
    assert (tmp_path / "neighbour" / "keep.txt").read_text() == "keep"


def test_overwrite_validates_before_removing(tmp_path, monkeypatch):
    RunDir.create(tmp_path / "run", {"seed": 1})
    before = _snapshot(tmp_path / "run")
    with pytest.raises(TypeError, match="JSON"):
        RunDir.create(tmp_path / "run", {"bad": object()}, overwrite=True)
    assert _snapshot(tmp_path / "run") == before
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(ValueError, match="refusing"):
        RunDir.create(tmp_path / "run", CONFIG, overwrite=True)
    with pytest.raises(ValueError, match="refusing"):
        RunDir.create(tmp_path, CONFIG, overwrite=True)
    assert _snapshot(tmp_path / "run") == before


def test_resume(tmp_path):
    RunDir.create(tmp_path / "run", CONFIG)
    given = json.loads(json.dumps(CONFIG))
    given["run"] = {"resume": str(tmp_path / "run"), "overwrite": True}
    run = RunDir.resume(tmp_path / "run", given)
    assert run.config["ppo"] == {"lr": 3e-4, "clip": 0.2}
    assert RunDir.resume(tmp_path / "run").config == run.config

    changed = json.loads(json.dumps(CONFIG))
    changed["ppo"]["lr"] = 1e-3
    changed["env"]["num_envs"] = 8
    del changed["seed"]
    changed["reward"] = {"name": "nwot"}
    with pytest.raises(ConfigMismatchError) as e:
        RunDir.resume(tmp_path / "run", changed)
    assert e.value.differences == [
        "env.num_envs: saved 4 != given 8",
        "ppo.lr: saved 0.0003 != given 0.001",
        'reward.name: saved <missing> != given "nwot"',
        "seed: saved 0 != given <missing>",
    ]
    for line in e.value.differences:
        assert line in str(e.value)
    # Listed keys can be allowed explicitly.
    RunDir.resume(
        tmp_path / "run", changed, ignore=("env.num_envs", "ppo", "seed", "re*")
    )

    with pytest.raises(FileNotFoundError, match="does not exist"):
        RunDir.resume(tmp_path / "nope")
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        RunDir.resume(tmp_path / "not-a-run")


def test_config_diff_nested():
    saved = {"a": {"b": {"c": 1, "d": [1, 2]}, "e": "x"}, "f": True, "g": {"h": 1}}
    given = {"a": {"b": {"c": 2, "d": (1, 2)}, "e": "x"}, "f": 1, "i": {"j": None}}
    assert config_diff(saved, given) == [
        "a.b.c: saved 1 != given 2",
        "f: saved true != given 1",
        "g.h: saved 1 != given <missing>",
        "i.j: saved <missing> != given null",
    ]
    assert config_diff(saved, given, ignore=("a", "f", "g.*", "i.j")) == []
    assert config_diff({"x": 1}, {"x": 1.0}) == []
    assert config_diff(saved, saved) == []


def test_metrics_append_read_truncate(tmp_path):
    run = RunDir.create(tmp_path / "run", CONFIG)
    assert run.read_metrics() == []
    run.truncate_metrics(3)  # no file yet: nothing to do
    import numpy as np

    for step in range(1, 7):
        run.append_metrics({"step": step, "reward": np.float32(step / 2)})
    run.append_metrics({"event": "note"})
    records = run.read_metrics()
    assert [r.get("step") for r in records] == [1, 2, 3, 4, 5, 6, None]
    assert records[2]["reward"] == 1.5
    run.truncate_metrics(4)
    assert [r.get("step") for r in run.read_metrics()] == [1, 2, 3, 4, None]
    # A torn last line (crash mid-write) is skipped, then truncation drops it.
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 5, "rew')
    assert [r.get("step") for r in run.read_metrics()] == [1, 2, 3, 4, None]
    run.truncate_metrics(2)
    assert run.metrics_path.read_text().splitlines() == [
        '{"step": 1, "reward": 0.5}',
        '{"step": 2, "reward": 1.0}',
        '{"event": "note"}',
    ]

    path = run.write_json("genotype.json", {"normal": [("sep_conv_3x3", 0)]})
    assert path == run.path / "genotype.json"
    assert run.read_json("genotype.json") == {"normal": [["sep_conv_3x3", 0]]}
    assert run.checkpointer().directory == run.path / "checkpoints"


def test_progress_tty_rule(monkeypatch):
    monkeypatch.delenv("JAXDARTS_PROGRESS", raising=False)
    bar = progress(10, "search")  # stderr is captured by pytest: not a TTY
    assert bar.disable
    bar.close()
    monkeypatch.setenv("JAXDARTS_PROGRESS", "1")
    with progress(10, "search", initial=4, unit="update") as bar:
        assert not bar.disable and bar.n == 4 and bar.unit == "update"
        bar.update(2)
        assert bar.n == 6
    assert progress(10, "x", disable=True).disable


@pytest.fixture
def restore_jaxdarts_logger():
    """Undoes setup_logging, so that other tests' caplog still sees 'jaxdarts'."""
    logger = logging.getLogger("jaxdarts")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
        if h not in saved[0]:
            h.close()
    for h in saved[0]:
        logger.addHandler(h)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_setup_logging(tmp_path, capsys, restore_jaxdarts_logger):
    logger = setup_logging(tmp_path / "run", verbose=False)
    logger.info("hello %d", 5)
    logger.debug("hidden")
    logger = setup_logging(tmp_path / "run", verbose=True)  # no duplicate handlers
    logger.debug("shown")
    for h in logger.handlers:
        h.flush()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert re.fullmatch(r"\d\d:\d\d:\d\d hello 5", out[0])
    assert out[1].endswith(" shown")
    text = (tmp_path / "run" / "log.txt").read_text()
    assert "hello 5" in text and "shown" in text and "hidden" not in text
    setup_logging(None)  # detach the file handler
    assert all(not isinstance(h, logging.FileHandler) for h in logger.handlers)


def test_compilation_cache_stores_cpu_compiles(tmp_path):
    script = textwrap.dedent(
        """
        import os, sys
        from jaxdarts.runs import enable_compilation_cache
        path = enable_compilation_cache(min_compile_time_secs=0.0)
        assert path == os.path.abspath(sys.argv[1]), path
        import jax, jax.numpy as jnp
        jax.jit(lambda x: jnp.sin(x) * 2 + 1)(jnp.ones(3)).block_until_ready()
        print(len(os.listdir(path)))
        """
    )
    cache = tmp_path / "cache"
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXDARTS_CACHE_DIR=str(cache))
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(cache)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) >= 1


def _wait_for(cond, timeout=2.0) -> None:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)


def test_graceful_interrupt(restore_jaxdarts_logger):
    logging.getLogger("jaxdarts").propagate = False  # keep the warning quiet
    previous = signal.getsignal(signal.SIGINT)
    with GracefulInterrupt() as stop:
        assert stop.active and not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for(lambda: stop.requested)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, timeout=1.0)
    assert signal.getsignal(signal.SIGINT) is previous


def test_graceful_interrupt_outside_main_thread():
    result = {}

    def body():
        with GracefulInterrupt() as stop:
            result["active"] = stop.active

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert result == {"active": False}


# ------------------------------------------------------- reading a run at a glance


def test_log_lines_do_not_collide_with_the_progress_bar(
    capsys, monkeypatch, restore_jaxdarts_logger
):
    import io

    from jaxdarts.runs import TqdmHandler

    term = io.StringIO()  # one terminal for the bar and the log lines
    monkeypatch.setattr(sys, "stdout", term)
    logger = setup_logging(None)
    assert any(isinstance(h, TqdmHandler) for h in logger.handlers)
    monkeypatch.setenv("JAXDARTS_PROGRESS", "1")
    with progress(10, "search") as bar:
        bar.fp = term  # tqdm draws on this stream
        bar.update(3)
        bar.refresh()
        logger.info("a log line")
        bar.update(3)
    lines = term.getvalue().replace("\r", "\n").splitlines()
    logged = [line for line in lines if "a log line" in line]
    # the bar was cleared before the line, so it stands alone
    assert len(logged) == 1 and re.fullmatch(r"\d\d:\d\d:\d\d a log line", logged[0])


def test_format_duration_and_summary(capsys):
    from jaxdarts.runs import format_duration, format_summary, print_summary

    assert format_duration(4.24) == "4.2s"
    assert format_duration(83.2) == "1m 23s"
    assert format_duration(3725) == "1h 02m"
    text = format_summary("done", [("genotype", "G"), ("skipped", None), ("wall", 3)])
    assert text.splitlines() == ["done", "  genotype  G", "  wall      3"]
    assert print_summary("done", [("a", 1)]) == "done\n  a  1"
    assert capsys.readouterr().out == "done\n  a  1\n"


def test_compile_timed_excludes_compiling_from_the_call():
    import jax
    import jax.numpy as jnp

    from jaxdarts.runs import compile_timed

    f = jax.jit(lambda x, n: x * n + 1, static_argnums=1)
    compiled, seconds = compile_timed(f, jnp.arange(3.0), 2)
    assert seconds > 0
    assert compiled(jnp.arange(3.0)).tolist() == [1.0, 3.0, 5.0]


def _read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TFRecord event files in ``folder`` (tag -> [(step, value)])."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_logger(tmp_path):
    pytest.importorskip("tensorboardX")
    from jaxdarts.runs import TensorBoardLogger

    tb = TensorBoardLogger(tmp_path / "tb")
    tb.log({"reward_mean": 1.5, "entropy": [0.5, 0.25], "note": "x"}, step=256)
    tb.log({"reward_mean": 2.5, "entropy": [0.4, 0.2]}, step=512)
    tb.close()
    scalars = _read_events(tmp_path / "tb")
    assert scalars["reward_mean"] == [(256, 1.5), (512, 2.5)]
    assert scalars["entropy/seed1"] == [(256, 0.25), (512, pytest.approx(0.2))]
    assert "note" not in scalars


def test_tensorboard_missing_extra_is_a_clear_error(monkeypatch):
    import importlib.util

    from jaxdarts.runs import TensorBoardLogger, check_tensorboard

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboardX" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r"pip install -e '\.\[tensorboard\]'"):
        check_tensorboard()
    with pytest.raises(ImportError, match="tensorboard"):
        TensorBoardLogger("/nonexistent/tb")


def test_plot_curves_draws_every_seed(tmp_path):
    from jaxdarts.plotting import plot_search_curves

    metrics = [
        {
            "timesteps": 256 * (i + 1),
            "reward_mean": [i, 2 * i],
            "reward_max": [i + 1, 2 * i + 1],
            "entropy": [2.0 - i / 10, 1.0],
        }  # noqa: E501
        for i in range(5)
    ]
    metrics[0]["reward_mean"] = [float("nan"), 0.0]  # no episode ended yet
    path = plot_search_curves(metrics, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 800
