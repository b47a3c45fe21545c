"""Starts one jaxdarts run as N local processes (a quick multi-host try on one machine).

::

    python -m jaxdarts.launch --processes 2 --devices-per-process 2 -- \\
        search --preset quick --num-envs 4 --devices 4 --out runs/two

starts ``python -m jaxdarts.search ...`` twice with ``JAXDARTS_COORDINATOR``
(``127.0.0.1:<free port>``), ``JAXDARTS_NUM_PROCESSES`` and ``JAXDARTS_PROCESS_ID``
set, so that the two processes join one run (:func:`jaxdarts.sharding.
initialize_distributed`); ``--devices-per-process K`` gives each process K devices
(on CPU ``--xla_force_host_platform_device_count=K``; on GPUs the K GPUs
``i*K .. i*K+K-1`` through ``JAXDARTS_LOCAL_DEVICE_IDS``). Every line a process
prints is prefixed ``[i]``. If one process fails, the others are stopped and the
launcher exits with that process's status. The command is ``search``,
``pretrain``, ``train`` or ``score`` (a jaxdarts command), any other module name
(run with ``python -m``), or a ``.py`` script.

:func:`benchmark_processes` times 1 process x 4 devices against 2 processes x 2
devices (the overhead of running as several processes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "COMMANDS",
    "benchmark_processes",
    "free_port",
    "launch",
    "main",
    "process_env",
    "command_line",
]

#: Short names of the jaxdarts commands.
COMMANDS = ("search", "pretrain", "train", "score")

_FORCE_FLAG = "--xla_force_host_platform_device_count"


def free_port() -> int:
    """A TCP port on localhost that is free now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command_line(command: str, args: Sequence[str]) -> list[str]:
    """The ``python ...`` argv of ``command`` (a jaxdarts command, module or script)."""
    if command in COMMANDS:
        return [sys.executable, "-m", f"jaxdarts.{command}", *args]
    if command.endswith(".py"):
        return [sys.executable, command, *args]
    if re.fullmatch(r"[A-Za-z_][\w.]*", command):
        return [sys.executable, "-m", command, *args]
    raise ValueError(
        f"command {command!r}: expected one of {', '.join(COMMANDS)}, a module name "
        "or a .py script"
    )


def _with_device_count(flags: str, k: int) -> str:
    kept = [f for f in flags.split() if not f.startswith(_FORCE_FLAG)]
    return " ".join([*kept, f"{_FORCE_FLAG}={k}"])


def process_env(
    index: int,
    processes: int,
    port: int,
    devices_per_process: int | None = None,
    base: dict[str, str] | None = None,
    init_timeout: int | None = None,
) -> dict[str, str]:
    """The environment of process ``index`` of a local ``processes``-process run.

    Args:
      index: process index in ``[0, processes)``.
      processes: number of processes.
      port: coordinator port on 127.0.0.1 (process 0 serves it).
      devices_per_process: devices each process uses (None: all it sees).
      base: environment to start from (default ``os.environ``).
      init_timeout: seconds to wait for every process to connect.

    Returns:
      The environment (a new dict).
    """
    env = dict(os.environ if base is None else base)
    env["JAXDARTS_COORDINATOR"] = f"127.0.0.1:{port}"
    env["JAXDARTS_NUM_PROCESSES"] = str(processes)
    env["JAXDARTS_PROCESS_ID"] = str(index)
    if devices_per_process is not None:
        k = int(devices_per_process)
        env["XLA_FLAGS"] = _with_device_count(env.get("XLA_FLAGS", ""), k)
        env["JAXDARTS_LOCAL_DEVICE_IDS"] = ",".join(
            str(i) for i in range(index * k, index * k + k)
        )
    if init_timeout is not None:
        env["JAXDARTS_INIT_TIMEOUT"] = str(int(init_timeout))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _pump(stream: TextIO, prefix: str, sink: TextIO, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            sink.write(prefix + line)
            sink.flush()
    stream.close()


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.time() + grace_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, end - time.time()))
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def launch(
    command: str,
    args: Sequence[str],
    processes: int,
    devices_per_process: int | None = None,
    port: int | None = None,
    init_timeout: int | None = None,
    grace_s: float = 10.0,
    stdout: TextIO | None = None,
) -> int:
    """Runs ``command args`` as ``processes`` local processes of one run.

    Output lines are prefixed ``[i] `` and written to ``stdout`` (default
    ``sys.stdout``). When a process exits with a non-zero status the others get
    SIGTERM (SIGKILL after ``grace_s`` seconds).

    Returns:
      0 when every process succeeded, else the first failing process's status
      (a signal: ``128 + signal``).

    Raises:
      ValueError: ``processes`` < 1, ``devices_per_process`` < 1 or a bad command.
    """
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    if devices_per_process is not None and devices_per_process < 1:
        raise ValueError(
            f"--devices-per-process must be >= 1, got {devices_per_process}"
        )
    argv = command_line(command, args)
    port = free_port() if port is None else int(port)
    sink = sys.stdout if stdout is None else stdout
    lock = threading.Lock()
    procs, pumps = [], []
    for i in range(processes):
        env = process_env(i, processes, port, devices_per_process, None, init_timeout)
        p = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        procs.append(p)
        t = threading.Thread(target=_pump, args=(p.stdout, f"[{i}] ", sink, lock))
        t.daemon = True
        t.start()
        pumps.append(t)
    status = _wait_all(procs, grace_s, sink, lock)
    for t in pumps:
        t.join(timeout=5)
    return status


def _wait_all(
    procs: list[subprocess.Popen], grace_s: float, sink: TextIO, lock: threading.Lock
) -> int:
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                with lock:
                    sink.write(
                        f"[launch] process {i} exited with status {code}; "
                        "stopping the others\n"
                    )
                    sink.flush()
                _stop(procs, grace_s)
                return code if code > 0 else 128 - code
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(procs, grace_s)
        return 130


# ------------------------------------------------------------------- benchmark


def benchmark_processes(
    search_args: Sequence[str] = (
        "--variant",
        "disc-nwot",
        "--preset",
        "quick",
        "--num-envs",
        "8",
        "--total-steps",
        "768",
        "--set",
        "run.updates_per_chunk=1",
    ),
    layouts: Sequence[tuple[int, int]] = ((1, 4), (2, 2)),
    workdir: str | None = None,
) -> list[dict[str, Any]]:
    """Search throughput of the same run as P processes x K devices, per layout.

    Runs ``search search_args --devices P*K`` once per ``(P, K)`` layout (on CPU:
    forced host devices; the environment's ``JAX_PLATFORMS`` applies) and reads
    the timesteps/s of the last update from ``metrics.jsonl`` (one update per
    jitted call, so the first includes compilation and the last does not; the
    default: 3 updates of 8 envs x 32 steps, ``quick`` preset; the discrete
    reward splits its envs over the devices too).

    Returns:
      One row per layout: ``{"processes", "devices_per_process", "devices",
      "timesteps_per_s", "wall_s"}``.
    """
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for procs, k in layouts:
            out = Path(tmp) / f"p{procs}x{k}"
            args = [*search_args, "--devices", str(procs * k), "--out", str(out)]
            t0 = time.time()
            if procs == 1:
                env = dict(os.environ)
                env["XLA_FLAGS"] = _with_device_count(env.get("XLA_FLAGS", ""), k)
                code = subprocess.run(
                    command_line("search", args), env=env, capture_output=True
                ).returncode
            else:
                with open(os.devnull, "w") as null:
                    code = launch("search", args, procs, k, stdout=null)
            wall = time.time() - t0
            if code:
                raise RuntimeError(f"benchmark layout {procs}x{k} failed ({code})")
            lines = (out / "metrics.jsonl").read_text().splitlines()
            rows.append(
                {
                    "processes": procs,
                    "devices_per_process": k,
                    "devices": procs * k,
                    "timesteps_per_s": json.loads(lines[-1])["steps_per_s"],
                    "wall_s": wall,
                }
            )
    return rows


# ------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxdarts.launch",
        description="Start one jaxdarts run as N local processes "
        "(jax.distributed over localhost).",
        usage="python -m jaxdarts.launch --processes N [--devices-per-process K] "
        "[--port P] -- COMMAND [ARGS ...]",
    )
    p.add_argument("--processes", type=int, required=True, metavar="N")
    p.add_argument("--devices-per-process", type=int, metavar="K")
    p.add_argument("--port", type=int, help="coordinator port (default: a free one)")
    p.add_argument(
        "--init-timeout",
        type=int,
        metavar="S",
        help="seconds to wait for every process to connect (JAXDARTS_INIT_TIMEOUT)",
    )
    p.add_argument(
        "--benchmark",
        action="store_true",
        help="time a small search as 1x4 and 2x2 processes x devices, print JSON",
    )
    p.add_argument("command", nargs="?", help="search, pretrain, train, score, ...")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        ns = parser.parse_args(argv[:cut])
        rest = argv[cut + 1 :]
        ns.command, ns.args = (rest[0], rest[1:]) if rest else (None, [])
    else:
        ns = parser.parse_args(argv)
    if ns.benchmark:
        print(json.dumps(benchmark_processes(), indent=1))
        return 0
    if not ns.command:
        parser.error("give the command after --, e.g. -- search --preset quick")
    # SIGTERM (a job scheduler, a test's time-out) stops the processes too
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return launch(
            ns.command,
            ns.args,
            ns.processes,
            ns.devices_per_process,
            ns.port,
            ns.init_timeout,
        )
    except ValueError as e:
        parser.error(str(e))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
