"""Section ``devices``: sharded search chunk and data-parallel step, 1 vs all devices."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile

from benchmarks import common as C
from benchmarks.training import pretrain_config, training_setup


def run(rec: C.Recorder, quick: bool) -> None:
    """Sharded search chunk and data-parallel step: 1 device vs all devices."""
    import jax

    if jax.device_count() == 1 and jax.default_backend() == "cpu":
        _devices_subprocess(rec, quick)
        return
    import jax.numpy as jnp
    import numpy as np

    from jaxdarts import sharding as S
    from jaxdarts import training as TR
    from jaxdarts.ppo.train import PPOConfig, make_train

    ndev = jax.device_count()
    counts = sorted({1, ndev})
    paths = ("dense",) if quick else ("dense", "discrete")
    num_envs = 2 * ndev
    layers = 1 if quick else 2
    for path in paths:
        cfg, params0, venv = C.tiny_env(num_envs, path, layers=layers)
        ppo = PPOConfig(n_steps=28, batch_size=56, n_epochs=2)
        init_fn, chunk_fn = make_train(ppo, venv)
        state0 = jax.jit(init_fn)(jax.random.key(1), params0)
        chunk = functools.partial(chunk_fn, num_updates=1)
        for n in counts:
            mesh = S.make_mesh(n)
            state = S.shard_train_state(state0, mesh)
            params = S.replicate(params0, mesh)
            conf = {
                "devices": n,
                "num_envs": num_envs,
                "path": path,
                "supernet": f"C4-L{layers}-B16-8x8x1",
                "n_steps": 28,
            }
            compiled, tc = C.compile_fn(chunk, state, params)
            dt = C.time_calls(compiled, state, params, min_time=1.0 if quick else 3.0)
            rec.add(
                "devices",
                f"search chunk {path} {n} dev timesteps/s",
                28 * num_envs / dt,
                "1/s",
                **conf,
            )
            rec.add("devices", f"search chunk {path} {n} dev compile", tc, "s", **conf)

    shape = (8, 8, 1)
    pcfg = pretrain_config("quick", channels=4, layers=2, batch_size=32)
    task, setup, state0 = training_setup(pcfg, shape, 1000, (0.5,), (0.25,))
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 256, (32, *shape), dtype=np.uint8)
    y0 = rng.integers(0, 10, 32).astype(np.int32)

    def pstep(s, x, y, k):
        return TR.train_step(s, x, y, k, {"lr": jnp.float32(0.025)}, task, setup)

    key = jax.random.key(1)
    for n in counts:
        mesh = S.make_mesh(n)
        state = S.replicate(state0, mesh)
        x, y = S.shard_batch(x0, y0, mesh)
        k = S.replicate(key, mesh)
        conf = {"devices": n, "batch": 32, "net": "supernet C4-L2 8x8x1"}
        compiled, tc = C.compile_fn(pstep, state, x, y, k)
        dt = C.time_calls(compiled, state, x, y, k, min_time=1.0 if quick else 3.0)
        rec.add("devices", f"supernet step {n} dev images/s", 32 / dt, "1/s", **conf)
        rec.add("devices", f"supernet step {n} dev compile", tc, "s", **conf)


def _devices_subprocess(rec: C.Recorder, quick: bool) -> None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "devices.json")
        cmd = [
            sys.executable,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_all.py"),
            "--only",
            "devices",
            "--json",
            out,
            "--no-table",
        ] + (["--quick"] if quick else [])
        print(
            "  (devices: re-running in a subprocess with 4 forced CPU devices)",
            flush=True,
        )
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            rec.add("devices", "subprocess failed", proc.returncode, "rc")
            return
        with open(out) as f:
            sub = json.load(f)
    for row in sub["rows"]:
        if row["item"] == "section wall time":
            continue
        cfg = dict(row.get("config", {}), forced_cpu_devices=4)
        rec.rows.append(dict(row, config=cfg))
