"""Sharded (4 forced CPU devices) runs equal single-device runs.

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` only takes effect before jax is
imported, so every check runs in a fresh Python subprocess that writes its results
(npz) to ``tmp_path``; this process compares them. Each subprocess runs the 1-device
and the 4-device version (a 1-device mesh in the same process), so the compile of
each program happens once per device count.

Search space s2 (2 ops per edge) everywhere a supernet is built: small programs,
quick compiles; the sharding does not depend on the ops.

Tolerances: float leaves ``rtol=1e-5, atol=1e-6`` (sharded reductions, e.g. the
all-reduced gradient mean or batch-norm statistics, sum in another order); integer,
bool and PRNG-key leaves exactly; a checkpoint round trip exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import xla_flags_with_devices

RTOL, ATOL = 1e-5, 1e-6
DEVICES = 4

# Shared by every subprocess: flatten a pytree to an npz (PRNG keys as key data).
_PRELUDE = textwrap.dedent(
    """
    import json, sys, time
    import jax, jax.numpy as jnp, numpy as np
    from jaxdarts import sharding as S

    OUT = sys.argv[1]
    assert jax.device_count() == 4, jax.devices()

    def flat(tree):
        out = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if leaf is None:
                continue
            if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            out[jax.tree_util.keystr(path)] = np.asarray(leaf)
        return out

    def save(name, tree):
        np.savez(f"{OUT}/{name}.npz", **flat(tree))

    def specs(tree):
        return sorted({str(tuple(x.sharding.spec)) for x in jax.tree.leaves(tree)
                       if hasattr(x, "sharding") and hasattr(x.sharding, "spec")})

    def spec(x):
        return list(x.sharding.spec)
    """
)

_SEARCH = textwrap.dedent(
    """
    from jaxdarts import env as E
    from jaxdarts.checkpoint import Checkpointer
    from jaxdarts.data import load_dataset, split_indices
    from jaxdarts.ppo.train import PPOConfig, make_train
    from jaxdarts.rewards import RewardConfig
    from jaxdarts.supernet import SupernetConfig

    ds = load_dataset("digits")
    _, va = split_indices(len(ds.train_images), 0)
    cfg = E.EnvConfig(
        kind="discrete",
        net=SupernetConfig(space="s2", channels=4, layers=1, impl="xla"),
        reward=RewardConfig(kind="nwot", path="dense"),
        batch_size=16, crop_pad=1,
    )
    variables = cfg.supernet.init(jax.random.key(0), ds.image_shape)
    params0 = E.make_params(
        cfg, variables, ds.train_images[va], ds.train_labels[va], ds.mean, ds.std
    )
    venv = E.LockstepEnv(cfg, num_envs=4)
    # 28 steps x 4 envs = one episode per update, 2 minibatches, 2 epochs.
    init_fn, chunk_fn = make_train(PPOConfig(n_steps=28, batch_size=56, n_epochs=2), venv)
    state0 = jax.jit(init_fn)(jax.random.key(1), params0)
    chunk = jax.jit(chunk_fn, static_argnums=2)
    info, states, params = {}, {}, {}
    T0 = time.time()
    for n in (1, 4):
        mesh = S.make_mesh(n)
        params[n] = S.replicate(params0, mesh)
        s = S.shard_train_state(state0, mesh)
        s, _ = chunk(s, params[n], 1)  # chunk(chunk(s, 1), 1) == chunk(s, 2)
        s, m = chunk(s, params[n], 1)
        states[n] = s
        save(f"search{n}", (s, m))
        save(f"state{n}", s)
        info[f"t{n}"] = time.time() - T0
        info[f"obs_spec{n}"] = spec(s.last_obs)
        info[f"alpha_spec{n}"] = spec(s.env_state.alpha_normal)
        info[f"param_specs{n}"] = specs(s.params)
        # checkpoint written with this device count
        with Checkpointer(f"{OUT}/ckpt{n}") as ck:
            ck.save(2, s)
    # resume each checkpoint with the other device count, then one more update
    for written, read in ((4, 1), (1, 4)):
        with Checkpointer(f"{OUT}/ckpt{written}") as ck:
            r = ck.restore(None, states[read])
        save(f"restored{written}to{read}", r)
        info[f"restored{written}to{read}_obs_spec"] = spec(r.last_obs)
        info[f"restored{written}to{read}_ndev"] = len(r.last_obs.sharding.device_set)
        r, m = chunk(r, params[read], 1)
        save(f"resumed{written}to{read}", (r, m))
    for n in (1, 4):
        s, m = chunk(states[n], params[n], 1)
        save(f"continued{n}", (s, m))
    info["t_end"] = time.time() - T0
    json.dump(info, open(f"{OUT}/info.json", "w"))
    """
)

# Two weight steps of the supernet (train-mode BN) and of the evaluation network
# (dropout, drop-path), each with the batch on 1 device and split 4 ways.
_TRAIN_STEPS = textwrap.dedent(
    """
    from jaxdarts import config as C, tasks, training as T
    from jaxdarts.data import load_dataset
    from jaxdarts.genotypes import get_genotype, to_json_dict

    ds = load_dataset("digits")
    x0, y0 = ds.train_images[:16], ds.train_labels[:16].astype(np.int32)
    step = jax.jit(T.train_step, static_argnames=("task", "setup"))
    info = {}

    def steps(name, config, task, hyper):
        setup = T.make_setup(config, ds.image_shape, 400, ds.mean, ds.std)
        state0 = T.create_state(task, jax.random.key(0), ds.image_shape, setup)
        for n in (1, 4):
            mesh = S.make_mesh(n)
            s = S.replicate(state0, mesh)
            x, y = S.shard_batch(x0, y0, mesh)
            info[f"{name}_x_spec{n}"] = spec(x)
            for _ in range(2):
                s, m = step(s, x, y, jax.random.key(3), hyper, task=task, setup=setup)
            save(f"{name}{n}", (s, m))
            info[f"{name}_param_specs{n}"] = specs(s.params)

    # XLA's own ops (tested equal to the CPU default elsewhere): quicker compiles.
    over = {"supernet.space": "s2", "supernet.channels": 4, "supernet.layers": 1,
            "train.batch_size": 16, "supernet.impl": "xla"}
    config = C.load("pretrain", preset="quick", overrides=over)
    task = tasks.supernet_task(config, ds.num_classes)
    steps("pretrain", config, task, {"lr": jnp.float32(0.05)})
    over = {"genotype": to_json_dict(get_genotype("disc-nwot")), "net.channels": 4,
            "net.layers": 1, "train.batch_size": 16, "net.identity_dropout": 0.2,
            "net.drop_path": 0.2, "net.impl": "xla"}
    config = C.load("train", preset="quick", overrides=over)
    task = tasks.evalnet_task(config, ds.num_classes)
    hyper = {"lr": jnp.float32(0.05), "drop_path": jnp.float32(0.1)}
    steps("evalnet", config, task, hyper)
    json.dump(info, open(f"{OUT}/info.json", "w"))
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags_with_devices(DEVICES)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(script: str, out: Path, timeout: float = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + script, str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads((out / "info.json").read_text())


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _assert_trees_close(a: Path, b: Path, exact: bool = False) -> None:
    x, y = _load(a), _load(b)
    assert x.keys() == y.keys()
    for k in x:
        u, v = x[k], y[k]
        assert u.shape == v.shape and u.dtype == v.dtype, k
        if exact or u.dtype.kind not in "fc":
            np.testing.assert_array_equal(u, v, err_msg=k)
        else:
            np.testing.assert_allclose(u, v, rtol=RTOL, atol=ATOL, err_msg=k)


def test_search_chunk_and_checkpoints(tmp_path: Path) -> None:
    """A PPO chunk on LockstepEnv (dense NWOT) with the env batch split 4 ways."""
    info = _run(_SEARCH, tmp_path)
    # the env batch is really split, the agent replicated
    assert info["obs_spec4"] == ["data"]
    assert info["alpha_spec4"][0] == "data"
    assert info["param_specs4"] == ["()"]
    _assert_trees_close(tmp_path / "search4.npz", tmp_path / "search1.npz")
    # checkpoints: exact round trip across device counts, placed like the target
    _assert_trees_close(
        tmp_path / "restored4to1.npz", tmp_path / "state4.npz", exact=True
    )
    _assert_trees_close(
        tmp_path / "restored1to4.npz", tmp_path / "state1.npz", exact=True
    )
    assert info["restored4to1_ndev"] == 1
    assert info["restored1to4_ndev"] == DEVICES
    assert info["restored1to4_obs_spec"] == ["data"]
    # resuming continues like the uninterrupted run of the reading device count
    _assert_trees_close(tmp_path / "resumed4to1.npz", tmp_path / "continued1.npz")
    _assert_trees_close(tmp_path / "resumed1to4.npz", tmp_path / "continued4.npz")


def test_train_steps_data_parallel(tmp_path: Path) -> None:
    """Supernet (train-mode BN) and evaluation-network (dropout, drop-path) weight
    steps with the batch split 4 ways equal the 1-device steps."""
    info = _run(_TRAIN_STEPS, tmp_path)
    for name in ("pretrain", "evalnet"):
        assert info[f"{name}_x_spec4"][0] == "data"
        assert info[f"{name}_param_specs4"] == ["()"]
        _assert_trees_close(tmp_path / f"{name}4.npz", tmp_path / f"{name}1.npz")


def test_search_cli_devices(tmp_path: Path) -> None:
    """``python -m jaxdarts.search --devices 4`` (seed axis + env axis) runs through."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "jaxdarts.search",
        "--preset",
        "quick",
        "--num-envs",
        "4",
        "--total-steps",
        "112",
        "--devices",
        "4",
        "--set",
        "env.reward_path=dense",
        "--set",
        "supernet.layers=1",
        "--space",
        "s2",
        "--out",
        str(out),
    ]
    env = dict(_env(), JAXDARTS_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "split over 4 device(s)" in (out / "log.txt").read_text()
    assert (out / "genotype.json").is_file()
    bad = subprocess.run(
        cmd[:-2] + ["--devices", "3", "--out", str(tmp_path / "bad")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "must divide" in bad.stderr


def test_make_mesh_errors_and_placement() -> None:
    """In-process (whatever device count this process has)."""
    import jax
    import jax.numpy as jnp

    from jaxdarts import sharding as S

    n = jax.device_count()
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        S.make_mesh(n + 1)
    with pytest.raises(ValueError, match=">= 1"):
        S.make_mesh(0)
    mesh = S.make_mesh()
    assert S.mesh_size(mesh) == n
    tree = {"a": jnp.zeros((4 * n, 3)), "b": jnp.zeros((3,)), "c": 1.0, "d": None}
    placed = S.shard_leading(tree, mesh)
    assert placed["c"] == 1.0 and placed["d"] is None
    assert placed["a"].sharding.spec == jax.sharding.PartitionSpec("data", None)
    x, y = S.shard_batch(np.zeros((2 * n, 8, 8, 1)), np.zeros(2 * n), mesh)
    assert x.shape == (2 * n, 8, 8, 1)
    if n > 1:
        with pytest.raises(ValueError, match="divisible"):
            S.shard_batch(np.zeros((n + 1, 2)), np.zeros(n + 1), mesh)
    # constrain_batch is a no-op without a mesh
    assert S.constrain_batch(tree["a"]) is tree["a"]
