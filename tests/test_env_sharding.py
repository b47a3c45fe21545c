"""The discrete reward path split over 4 forced CPU devices equals the 1-device run.

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` only takes effect before jax is
imported, so the check runs in a fresh Python subprocess, which plays the same
episodes of 8 lockstep envs (search space s2: 2 ops per edge, a quick compile)
without a mesh and under a 4-device mesh (``jax.set_mesh``) and writes the rewards, a flag telling whether the program used
``shard_map`` and the timings to ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from helpers import xla_flags_with_devices

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import jax, jax.numpy as jnp, numpy as np
    from jaxdarts import env as E
    from jaxdarts import sharding as S
    from jaxdarts.data import load_dataset, split_indices
    from jaxdarts.rewards import RewardConfig
    from jaxdarts.supernet import SupernetConfig

    OUT = sys.argv[1]
    assert jax.device_count() == 4, jax.devices()
    ds = load_dataset("digits")
    _, va = split_indices(len(ds.train_images), 0)
    cfg = E.EnvConfig(
        kind="discrete",
        net=SupernetConfig(space="s2", channels=4, layers=1),
        reward=RewardConfig(kind="nwot", path="discrete"),
        batch_size=16, crop_pad=1,
    )
    v = cfg.supernet.init(jax.random.key(0), ds.image_shape)
    params = E.make_params(cfg, v, ds.train_images[va], ds.train_labels[va],
                           ds.mean, ds.std)
    N = 8
    venv = E.LockstepEnv(cfg, N)

    def episode(key, params):
        obs, state = venv.reset(key, params)
        def body(state, k):
            a = jax.random.randint(k, (N,), 0, cfg.num_ops)
            obs, state, r, term, trunc, info = venv.step(k, state, a, params)
            return state, (r, term)
        _, (r, term) = jax.lax.scan(body, state, jax.random.split(key, 28))
        return r, term

    out = {}
    for n in (1, 4):
        mesh = S.make_mesh(n)
        with jax.set_mesh(mesh):
            p = S.replicate(params, mesh)
            f = jax.jit(episode)
            out[f"shard_map{n}"] = "shard_map" in str(
                jax.make_jaxpr(episode)(jax.random.key(1), p))
            r, term = f(jax.random.key(1), p)
            jax.block_until_ready(r)
            t0 = time.perf_counter()
            r, term = f(jax.random.key(1), p)
            jax.block_until_ready(r)
            out[f"t{n}"] = time.perf_counter() - t0
        np.savez(f"{OUT}/r{n}.npz", r=np.asarray(r), term=np.asarray(term))
    json.dump(out, open(f"{OUT}/info.json", "w"))
    """
)


def test_discrete_reward_sharded_over_4_devices_equals_1_device(tmp_path: Path):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = xla_flags_with_devices(4)
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    info = json.loads((tmp_path / "info.json").read_text())
    # One device: the plain loop; four: the envs split with shard_map.
    assert info["shard_map1"] is False and info["shard_map4"] is True
    r1, r4 = np.load(tmp_path / "r1.npz"), np.load(tmp_path / "r4.npz")
    np.testing.assert_array_equal(r1["term"], r4["term"])
    assert r1["term"][27].all() and (r1["r"][27] > 0).all()
    np.testing.assert_allclose(r4["r"], r1["r"], rtol=1e-6, atol=1e-6)
    print(
        f"episode of 8 envs: 1 device {info['t1']:.3f} s, 4 devices {info['t4']:.3f} s"
    )
