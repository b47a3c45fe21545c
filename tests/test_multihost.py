"""Several processes on one machine: multi-host runs tested without a cluster.

Each run is spawned as subprocesses on forced CPU devices: 2 processes x 2 devices
(``python -m jaxdarts.launch``, a free localhost port, gloo collectives) against
1 process x 4 devices, started at the same time. The 2-process run must give the
same metrics (``rtol 1e-5``: the sharded reductions are the same programs, only
the collectives cross processes), write its run folder once (process 0 only: no
duplicate metric lines, nothing logged at INFO by process 1), and a checkpoint
written by one layout must resume on the other.

Also: a process whose partner never connects stops within the init time-out with
a clear message, and the launcher fails as a whole when one process fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import xla_flags_with_devices

RTOL, ATOL = 1e-5, 1e-7
TIMING = {"steps_per_s", "time", "images_per_s", "wall_s", "compile_s"}
TIMEOUT = 600

# The smallest runs: 1 cell, C=4 (C=2 for the search's supernet), search space s2
# (2 ops per edge: small programs, quick compiles), a 200-image subset of the 8x8
# digits, one PPO update / one epoch. The discrete reward path (the default) runs
# split over the devices (env.map_envs). The pretraining runs use XLA's own ops
# (`supernet.impl=xla`): the dense training step compiles in ~2/3 of the time of the
# CPU default's (the two are tested equal elsewhere); the search keeps the default,
# whose many small forward passes run faster.
SEARCH = [
    "search",
    "--variant",
    "disc-nwot",
    "--preset",
    "quick",
    *("--space", "s2", "--set", "supernet.layers=1", "--set", "supernet.channels=2"),
    *("--set", "env.num_envs=4", "--set", "env.batch_size=8"),
    *("--set", "ppo.transitions_per_update=112", "--set", "ppo.n_epochs=1"),
    *("--set", "ppo.batch_size=56", "--set", "run.total_steps=112"),
    *("--set", "run.top_k=2", "--devices", "4"),
]


# Cheap ops (1 cell: the reduction cell; a sep_conv and pools for parameters and
# BatchNorm statistics), for a quick compile.
GENOTYPE = (
    "Genotype(normal=[('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), "
    "('skip_connect', 1), ('skip_connect', 0), ('skip_connect', 1), "
    "('skip_connect', 0), ('skip_connect', 1)], normal_concat=range(2, 6), "
    "reduce=[('sep_conv_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('avg_pool_3x3', 0), ('skip_connect', 3), ('skip_connect', 2), "
    "('skip_connect', 4), ('skip_connect', 3)], reduce_concat=range(2, 6))"
)


def _train(npz: Path) -> list[str]:
    return [
        "train",
        *("--genotype", GENOTYPE, "--preset", "quick", "--dataset", f"npz:{npz}"),
        *("--channels", "4", "--layers", "1", "--epochs", "1", "--batch-size", "16"),
        *("--set", "train.eval_batch_size=40", "--set", "train.steps_per_call=10"),
        *("--devices", "4"),
    ]


def _pretrain(npz: Path) -> list[str]:
    return [
        "pretrain",
        *("--preset", "quick", "--dataset", f"npz:{npz}", "--space", "s2"),
        *("--channels", "4", "--layers", "1", "--epochs", "2", "--batch-size", "8"),
        *("--set", "train.eval_batch_size=40", "--set", "train.steps_per_call=10"),
        *("--set", "supernet.impl=xla", "--devices", "4"),
    ]


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """200 digits (8x8, 160 train / 40 test) and a compilation cache folder."""
    from sklearn.datasets import load_digits

    d = load_digits()
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    images = np.rint(d.images[:200] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    np.savez(path, images=images, labels=d.target[:200].astype(np.int32))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXDARTS_")}
    env.update(JAX_PLATFORMS="cpu", JAXDARTS_PROGRESS="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _start(
    layout: tuple[int, int], argv: list[str], log: Path, cache: Path
) -> subprocess.Popen:
    """Starts ``argv`` as ``layout`` = (processes, devices per process)."""
    procs, k = layout
    # a per-test compilation cache (used by 1-process runs only): the resume on
    # 1 process compiles nothing
    # a process that fails waits at most 60 s for the others at exit; on a loaded
    # 2-core machine (two test workers, three processes here) the coordination
    # heartbeats have been seen to stall past the default 100 s during compiles
    base = {
        "JAXDARTS_CACHE_DIR": str(cache),
        "JAXDARTS_SHUTDOWN_TIMEOUT": "60",
        "JAXDARTS_HEARTBEAT_TIMEOUT": "600",
    }
    if procs == 1:
        cmd = [sys.executable, "-m", f"jaxdarts.{argv[0]}", *argv[1:]]
        env = _env(XLA_FLAGS=xla_flags_with_devices(k), **base)
    else:
        cmd = [sys.executable, "-m", "jaxdarts.launch", "--processes", str(procs)]
        cmd += ["--devices-per-process", str(k), "--", *argv]
        env = _env(**base)
    out = open(log, "w")
    return subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _run_both(runs: list[tuple[tuple[int, int], list[str], Path]], cache: Path):
    """Runs the commands side by side; fails with the log of any that failed."""
    started = [(_start(layout, argv, log, cache), log) for layout, argv, log in runs]
    try:
        for p, log in started:
            try:
                code = p.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                code = "timeout"
            assert code == 0, f"{log.name}: exit {code}\n{log.read_text()[-4000:]}"
    finally:
        for p, _ in started:  # the launcher and its processes, if still running
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)), "duplicate metric lines: two writers"
    return [json.loads(line) for line in lines]


def _assert_close(a: dict, b: dict) -> None:
    keys = sorted(set(a) - TIMING)
    assert keys == sorted(set(b) - TIMING)
    for k in keys:
        np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL, err_msg=k)


def _assert_one_writer(log: Path, run: Path, marker: str) -> None:
    """Process 1 (prefix ``[1]``) logged nothing at INFO and printed no outputs;
    ``log.txt`` holds ``marker`` once (one writer)."""
    lines = log.read_text().splitlines()
    assert any(line.startswith("[0] ") and marker in line for line in lines)
    ones = [line for line in lines if line.startswith("[1] ") and marker in line]
    assert not ones, ones
    assert not any(line.startswith("[1] ") and "done" in line for line in lines)
    text = (run / "log.txt").read_text()
    assert text.count(marker) == 1, text


@pytest.mark.slow
def test_search_two_processes_match_one(tmp_path: Path) -> None:
    """1x4 and 2x2: the same first-update metrics and genotype; one writer."""
    one, two = tmp_path / "one", tmp_path / "two"
    _run_both(
        [
            ((1, 4), [*SEARCH, "--out", str(one)], tmp_path / "one.log"),
            ((2, 2), [*SEARCH, "--out", str(two)], tmp_path / "two.log"),
        ],
        tmp_path / "cache",
    )
    a, b = _records(one), _records(two)
    assert [r["update"] for r in a] == [r["update"] for r in b] == [1]
    _assert_close(a[0], b[0])
    for name in ("genotype.json", "top_architectures.json"):
        assert json.loads((one / name).read_text()) == json.loads(
            (two / name).read_text()
        )
    assert (two / "summary.json").is_file() and (two / "cells.png").is_file()
    _assert_one_writer(tmp_path / "two.log", two, "run folder")


@pytest.mark.slow
def test_train_two_processes_match_one(tmp_path: Path, npz: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _run_both(
        [
            ((1, 4), [*_train(npz), "--out", str(one)], tmp_path / "one.log"),
            ((2, 2), [*_train(npz), "--out", str(two)], tmp_path / "two.log"),
        ],
        tmp_path / "cache",
    )
    a, b = _records(one), _records(two)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1]
    _assert_close(a[0], b[0])
    assert (two / "result.json").is_file() and (two / "curves.png").is_file()
    assert (two / "genotype.json").is_file()
    _assert_one_writer(tmp_path / "two.log", two, "network:")


@pytest.mark.slow
def test_pretrain_matches_and_resumes_across_layouts(tmp_path: Path, npz) -> None:
    """1x4 and 2x2 stop after epoch 1 (same metrics); each resumes on the other
    (the Orbax checkpoint of 2 processes on 1 and the other way round)."""
    argv, cache = _pretrain(npz), tmp_path / "cache"
    a, b = tmp_path / "a", tmp_path / "b"  # a: started on 1x4, b: on 2x2
    _run_both(
        [
            ((1, 4), [*argv, "--stop-after", "1", "--out", str(a)], tmp_path / "a1"),
            ((2, 2), [*argv, "--stop-after", "1", "--out", str(b)], tmp_path / "b1"),
        ],
        cache,
    )
    ra, rb = _records(a), _records(b)
    assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb] == [0, 1]
    for x, y in zip(ra, rb, strict=True):
        _assert_close(x, y)
    _assert_one_writer(tmp_path / "b1", b, "supernet s2")
    assert (b / "supernet" / "supernet.json").is_file()
    resume = ["pretrain", "--devices", "4", "--resume"]
    _run_both(
        [
            ((2, 2), [*resume, str(a)], tmp_path / "a2"),  # 1 process -> 2
            ((1, 4), [*resume, str(b)], tmp_path / "b2"),  # 2 processes -> 1
        ],
        cache,
    )
    ra, rb = _records(a), _records(b)
    assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb] == [0, 1, 2]
    _assert_close(ra[-1], rb[-1])
    for run in (a, b):
        result = json.loads((run / "result.json").read_text())
        assert result["epochs"] == 2
        assert (run / "supernet" / "supernet.json").is_file()


# -------------------------------------------------------------- library, failures

_GLOBAL_ARRAYS = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jaxdarts import sharding as S
    assert S.initialize_distributed()
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    mesh = S.make_mesh(4)
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    xs = S.shard_leading({"x": x, "k": jax.random.split(jax.random.key(0), 8)}, mesh)
    assert not xs["x"].is_fully_addressable
    rows = [s.index[0] for s in xs["x"].addressable_shards]
    assert len(rows) == 2
    total = jax.jit(lambda t: (t["x"] * 2).sum())(xs)
    back = S.fetch(xs)  # process_allgather of the split array
    np.testing.assert_array_equal(back["x"], x)
    np.testing.assert_array_equal(
        back["k"], jax.random.key_data(jax.random.split(jax.random.key(0), 8))
    )
    assert float(S.fetch(total)) == float(2 * x.sum())
    own = x[4 * S.process_index(): 4 * S.process_index() + 4]
    g = S.local_batch_to_global(own, mesh)
    np.testing.assert_array_equal(S.fetch(g), x)
    S.barrier("done", timeout_s=60)
    S.barrier("done", timeout_s=60)  # a name used again is a new barrier
    print("ok", S.process_index(), S.is_writer(), flush=True)
    """
)


def test_global_arrays_and_gather_on_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(_GLOBAL_ARRAYS)
    cmd = [sys.executable, "-m", "jaxdarts.launch", "--processes", "2"]
    cmd += ["--devices-per-process", "2", "--", str(script)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "[0] ok 0 True" in r.stdout and "[1] ok 1 False" in r.stdout


def test_missing_process_stops_within_init_timeout(tmp_path: Path) -> None:
    """Process 0 of 2 alone: a clear error and a failure within the bound."""
    from jaxdarts.launch import free_port

    env = _env(
        JAXDARTS_COORDINATOR=f"127.0.0.1:{free_port()}",
        JAXDARTS_NUM_PROCESSES="2",
        JAXDARTS_PROCESS_ID="0",
        JAXDARTS_INIT_TIMEOUT="3",
    )
    cmd = [sys.executable, "-m", "jaxdarts.search", *SEARCH[1:]]
    cmd += ["--out", str(tmp_path / "run")]
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.time() - t0
    assert r.returncode != 0, r.stderr[-3000:]  # JAX aborts: SIGABRT
    assert "error: process 0 of 2 could not join the run" in r.stderr
    assert "JAXDARTS_INIT_TIMEOUT" in r.stderr
    assert elapsed < 120  # 3 s time-out + start-up (imports) on a loaded machine
    assert not (tmp_path / "run").exists()


def test_launch_stops_everyone_when_one_fails(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['JAXDARTS_PROCESS_ID'] == '1':\n"
        "    print('bye', flush=True); sys.exit(7)\n"
        "time.sleep(300)\n"
    )
    cmd = [sys.executable, "-m", "jaxdarts.launch", "--processes", "2", "--"]
    t0 = time.time()
    r = subprocess.run(
        [*cmd, str(script)], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 7, r.stdout
    assert "[1] bye" in r.stdout
    assert "process 1 exited with status 7" in r.stdout
    assert time.time() - t0 < 60


def test_launch_sigterm_stops_the_processes(tmp_path: Path) -> None:
    """SIGTERM to the launcher (a scheduler, a time-out) stops its processes."""
    script = tmp_path / "sleep.py"
    script.write_text(
        "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(300)\n"
    )
    cmd = [sys.executable, "-m", "jaxdarts.launch", "--processes", "2", "--"]
    p = subprocess.Popen(
        [*cmd, str(script)], env=_env(), stdout=subprocess.PIPE, text=True
    )
    pids = []
    while len(pids) < 2:
        line = p.stdout.readline()
        assert line, "the launcher ended early"
        if " pid " in line:
            pids.append(int(line.split()[-1]))
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 130
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_launch_env_and_errors() -> None:
    from jaxdarts.launch import command_line, process_env

    env = process_env(
        1,
        2,
        1234,
        2,
        base={"XLA_FLAGS": "--foo --xla_force_host_platform_device_count=8"},
    )
    assert env["JAXDARTS_COORDINATOR"] == "127.0.0.1:1234"
    assert env["JAXDARTS_NUM_PROCESSES"] == "2" and env["JAXDARTS_PROCESS_ID"] == "1"
    assert env["XLA_FLAGS"] == "--foo --xla_force_host_platform_device_count=2"
    assert env["JAXDARTS_LOCAL_DEVICE_IDS"] == "2,3"
    assert command_line("search", ["-x"])[1:] == ["-m", "jaxdarts.search", "-x"]
    with pytest.raises(ValueError, match="expected one of"):
        command_line("rm -rf /", [])


def test_bad_distributed_env_is_refused(monkeypatch) -> None:
    from jaxdarts import sharding as S

    monkeypatch.setenv("JAXDARTS_COORDINATOR", "127.0.0.1:1")
    monkeypatch.setenv("JAXDARTS_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAXDARTS_PROCESS_ID", "2")
    with pytest.raises(ValueError, match=r"JAXDARTS_PROCESS_ID=2 must be in \[0, 2\)"):
        S.initialize_distributed()
    monkeypatch.setenv("JAXDARTS_PROCESS_ID", "0")
    monkeypatch.setenv("JAXDARTS_INIT_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="JAXDARTS_INIT_TIMEOUT='soon'"):
        S.initialize_distributed()
    assert S.process_count() == 1 and S.is_writer()


_DIES = textwrap.dedent(
    """
    import os, time
    import jax, numpy as np
    from jaxdarts import sharding as S
    S.initialize_distributed()
    x = S.shard_leading(np.arange(8.0), S.make_mesh(4))
    print("sum", float(S.fetch(jax.jit(lambda a: a.sum())(x))), flush=True)
    if S.process_index() == 1:
        os._exit(1)  # dies without a word to the others
    for _ in range(600):
        S.fetch(jax.jit(lambda a: a * 2)(x))
        time.sleep(0.5)
    print("still running", flush=True)
    """
)


def test_dead_process_stops_the_others(tmp_path: Path) -> None:
    """Process 1 dies after the first step: process 0 stops within the heartbeat."""
    from jaxdarts.launch import free_port

    script = tmp_path / "dies.py"
    script.write_text(_DIES)
    port = free_port()
    procs = []
    for i in range(2):
        env = _env(
            XLA_FLAGS=xla_flags_with_devices(2),
            JAXDARTS_COORDINATOR=f"127.0.0.1:{port}",
            JAXDARTS_NUM_PROCESSES="2",
            JAXDARTS_PROCESS_ID=str(i),
            JAXDARTS_HEARTBEAT_TIMEOUT="3",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    out1, _ = procs[1].communicate(timeout=240)
    assert procs[1].returncode == 1 and "sum 28.0" in out1
    t_dead = time.time()
    out0, err0 = procs[0].communicate(timeout=240)
    assert procs[0].returncode != 0, out0
    assert "still running" not in out0
    assert "heartbeat" in err0 and "Task 1" in err0, err0[-3000:]
    assert time.time() - t_dead < 120  # 3 s heartbeat + detection, loaded machine
