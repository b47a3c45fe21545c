#!/usr/bin/env python
"""Section ``reference``: jaxdarts side by side with the reference (nidhishs/dartsrl).

Times, at the same sizes and with the same number of CPU threads, in one run:

* one NWOT reward of a random discrete architecture (the reference's ``Scorer`` on
  its supernet with the chosen ops' alphas at the 1e6 sentinel; jaxdarts'
  ``score_architectures`` on the discrete path, after compile);
* env steps/s of a random policy: disc-nwot (episodes of 28 steps, the reward at the
  end) and cont-acc-step (the continuous env with a weight step after every sweep of
  28 steps, 10-frame stack; jaxdarts with ``weight_step_period=1``);
* PPO end to end: the reference's stable-baselines3 ``PPO("MlpPolicy", env).learn()``
  of one update on disc-nwot, jaxdarts' ``make_train`` chunk of one update (after
  compile; compile time is its own row).

Sizes: the paper setting for disc-nwot (C=16, 8 cells, batch 64, 32x32x3, 2048
transitions per update) and C=8, 5 cells, batch 32 for cont-acc-step; ``--quick``
shrinks everything (C=4, 3 cells, batch 16, 64 transitions) to check the script.
Inputs are random CIFAR-shaped tensors: throughput does not depend on pixel values,
and no dataset (nor torchvision) is needed.

The reference runs from the user's own checkout (``--reference PATH``) under a
Python that has torch, stable-baselines3 and gymnasium (``--reference-python``,
default: this Python). Each side runs in its own subprocess that pins itself, before importing torch or
jax, to the same ``--threads`` CPUs (``sched_setaffinity``, ``torch.set_num_threads`` and the OpenMP /
BLAS thread variables), so torch and XLA never compete for cores. The reference side
of this file imports neither jax nor jaxdarts, so the module imports them inside the
functions of the jaxdarts side only.

Usage::

    python benchmarks/reference.py --reference ~/src/dartsrl \\
        --reference-python ~/venvs/dartsrl/bin/python [--quick] [--threads 2] \\
        [--json OUT]
    python benchmarks/run_all.py --only reference --reference ~/src/dartsrl \\
        --reference-python ~/venvs/dartsrl/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

EDGES = 14  # per cell type; an episode decides 2 x 14 edges
SENTINEL = 1e6

PAPER = {
    "disc": {"channels": 16, "layers": 8, "batch": 64},
    "cont": {"channels": 8, "layers": 5, "batch": 32, "sweeps": 10, "frames": 10},
    "n_steps": 2048,
    "reward_reps": 5,
    "disc_episodes": 2,
    "cont_steps": 280,
}
QUICK = {
    "disc": {"channels": 4, "layers": 3, "batch": 16},
    "cont": {"channels": 4, "layers": 3, "batch": 16, "sweeps": 1, "frames": 10},
    "n_steps": 64,
    "reward_reps": 2,
    "disc_episodes": 1,
    "cont_steps": 28,
}
METRICS = {  # key: (label, unit, higher is better)
    "nwot_reward_s": ("one NWOT reward (disc, A=1)", "s", False),
    "disc_env_steps_per_s": ("disc-nwot env steps/s (random policy)", "1/s", True),
    "cont_env_steps_per_s": (
        "cont-acc-step env steps/s (random policy, step every sweep)",
        "1/s",
        True,
    ),
    "ppo_timesteps_per_s": ("PPO disc-nwot timesteps/s (one update)", "1/s", True),
    "weight_step_s": ("cont dense weight step (SGD, train-mode BN)", "s", False),
}


def _progress(side: str, what: str) -> None:
    print(f"    {side}: {what}", file=sys.stderr, flush=True)


def _label(size: dict[str, int]) -> str:
    return f"C{size['channels']}-L{size['layers']}-B{size['batch']}-32x32x3"


# ------------------------------------------------------------------ reference side
def _torch_loader(n: int, batch: int, seed: int):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def _reference_net(size: dict[str, int]):
    from model import SEARCH_SPACES, SearchNetwork

    return SearchNetwork(
        c_in=3,
        c=size["channels"],
        num_classes=10,
        num_layers=size["layers"],
        primitives=SEARCH_SPACES["darts"],
    )


def _frame_stack(env, frames: int):
    import gymnasium as gym

    if hasattr(gym.wrappers, "FrameStack"):  # gymnasium < 1.0
        return gym.wrappers.FrameStack(env, frames)
    return gym.wrappers.FrameStackObservation(env, frames)


def reference_side(path: str, sizes: dict[str, Any], threads: int) -> dict[str, float]:
    """Times the reference's own code (run under the reference's Python)."""
    sys.path.insert(0, os.path.abspath(path))
    import numpy as np
    import torch
    from environment import ContinuousDartsRL, DiscreteDartsRL, Scorer
    from stable_baselines3 import PPO

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    disc = sizes["disc"]

    model = _reference_net(disc)
    loader = _torch_loader(8 * disc["batch"], disc["batch"], 0)
    x, y = next(iter(loader))
    scorer = Scorer(model, Scorer.NWOT)
    times = []
    for _ in range(sizes["reward_reps"] + 1):  # the first call warms up
        model.reset_alphas()
        with torch.no_grad():
            for alpha in model.alphas:
                ops = torch.as_tensor(rng.integers(0, alpha.shape[1], EDGES))
                alpha[torch.arange(EDGES), ops] = SENTINEL
        t = time.perf_counter()
        scorer(x, y)
        times.append(time.perf_counter() - t)
    out["nwot_reward_s"] = statistics.median(times[1:])
    _progress("dartsrl", f"NWOT reward {out['nwot_reward_s']:.3g} s")

    env = DiscreteDartsRL(model, loader, Scorer.NWOT, "cpu")
    env.action_space.seed(0)
    steps = sizes["disc_episodes"] * 2 * EDGES
    env.reset(seed=0)
    t = time.perf_counter()
    for _ in range(steps):
        _, _, done, _, _ = env.step(env.action_space.sample())
        if done:
            env.reset()
    out["disc_env_steps_per_s"] = steps / (time.perf_counter() - t)
    _progress("dartsrl", f"disc env {out['disc_env_steps_per_s']:.3g} steps/s")

    cont = sizes["cont"]
    cmodel = _reference_net(cont)
    cenv = ContinuousDartsRL(
        cmodel,
        _torch_loader(8 * cont["batch"], cont["batch"], 1),
        _torch_loader(8 * cont["batch"], cont["batch"], 2),
        cont["sweeps"],
        "acc",
        False,
        True,
        "cpu",
    )
    cenv = _frame_stack(cenv, cont["frames"])
    cenv.action_space.seed(0)
    cenv.reset(seed=0)
    t = time.perf_counter()
    for _ in range(sizes["cont_steps"]):
        _, _, done, _, _ = cenv.step(cenv.action_space.sample())
        if done:
            cenv.reset()
    out["cont_env_steps_per_s"] = sizes["cont_steps"] / (time.perf_counter() - t)
    _progress("dartsrl", f"cont env {out['cont_env_steps_per_s']:.3g} steps/s")
    times = []
    for _ in range(sizes["reward_reps"] + 1):  # the env's own SGD step, train BN
        t = time.perf_counter()
        cenv.unwrapped._model_step(train=True)
        times.append(time.perf_counter() - t)
    out["weight_step_s"] = statistics.median(times[1:])
    _progress("dartsrl", f"weight step {out['weight_step_s']:.3g} s")

    n = sizes["n_steps"]
    agent = PPO("MlpPolicy", env, n_steps=n, seed=0, device="cpu", verbose=0)
    t = time.perf_counter()
    agent.learn(total_timesteps=n)
    out["ppo_timesteps_per_s"] = n / (time.perf_counter() - t)
    return out


# -------------------------------------------------------------------- jaxdarts side
def disc_edges(size: dict[str, int]) -> str:
    """The edge form ``python -m jaxdarts.search`` uses for disc-nwot at this size."""
    from jaxdarts.build import edge_form

    supernet = {"channels": size["channels"], "layers": size["layers"]}
    env = {"kind": "discrete", "reward_path": "discrete"}
    return edge_form({"supernet": {**supernet, "edges": "auto"}, "env": env})


def _jax_disc_env(size: dict[str, int], num_envs: int = 1):
    from benchmarks import common as C
    from jaxdarts.env import EnvConfig, LockstepEnv
    from jaxdarts.rewards import RewardConfig
    from jaxdarts.supernet import SupernetConfig

    cfg = EnvConfig(
        kind="discrete",
        net=SupernetConfig(
            channels=size["channels"], layers=size["layers"], edges=disc_edges(size)
        ),
        reward=RewardConfig(kind="nwot", path="discrete"),
        batch_size=size["batch"],
    )
    images, labels = C.synthetic_images(8 * size["batch"], (32, 32, 3))
    cfg, params = C.env_params_for(cfg, images, labels, C.CIFAR_MEAN, C.CIFAR_STD)
    return cfg, params, LockstepEnv(cfg, num_envs)


def _jax_cont_env(size: dict[str, int]):
    from benchmarks import common as C
    from jaxdarts.env import EnvConfig, LockstepEnv
    from jaxdarts.rewards import RewardConfig
    from jaxdarts.supernet import SupernetConfig

    cfg = EnvConfig(
        kind="continuous",
        net=SupernetConfig(
            channels=size["channels"], layers=size["layers"], swap_cells=True
        ),
        reward=RewardConfig(kind="acc"),
        batch_size=size["batch"],
        sweeps=size["sweeps"],
        frame_stack=size["frames"],
        weight_step=True,
        weight_step_period=1,  # the reference steps the weights after every sweep
    )
    images, labels = C.synthetic_images(8 * size["batch"], (32, 32, 3))
    train = C.synthetic_images(8 * size["batch"], (32, 32, 3), seed=1)
    cfg, params = C.env_params_for(
        cfg, images, labels, C.CIFAR_MEAN, C.CIFAR_STD, train
    )
    return cfg, params, LockstepEnv(cfg, 1)


def _random_policy_steps_per_s(venv, params, steps: int) -> tuple[float, float]:
    """``(env steps/s, compile s)`` of ``steps`` random-action steps of one env."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from benchmarks import common as C

    def play(key, params, nsteps):
        _, state = venv.reset(key, params)

        def body(i, carry):
            state, acc = carry
            k = jax.random.fold_in(key, i)
            if venv.action_kind == "discrete":
                a = jax.random.randint(k, (venv.num_envs,), 0, venv.action_dim)
            else:
                a = jax.random.uniform(
                    k, (venv.num_envs, venv.action_dim), minval=-1.0, maxval=1.0
                )
            out = venv.step(k, state, a, params)
            return out[1], acc + out[2].sum()

        return lax.fori_loop(0, nsteps, body, (state, jnp.float32(0)))[1]

    key = jax.random.key(1)
    compiled, tc = C.compile_fn(play, key, params, jnp.int32(1))
    dt = C.time_calls(compiled, key, params, jnp.int32(steps), min_time=0.0)
    return venv.num_envs * steps / dt, tc


def jaxdarts_side(sizes: dict[str, Any]) -> dict[str, float]:
    """Times jaxdarts at the same sizes (run under the jaxdarts Python)."""
    import functools
    import statistics as st

    import jax

    from benchmarks import common as C
    from jaxdarts.ppo import PPOConfig, make_train
    from jaxdarts.rewards import RewardConfig, score_architectures

    jax.config.update("jax_enable_compilation_cache", False)
    out: dict[str, float] = {}
    disc = sizes["disc"]
    setting = {**disc, "image": (32, 32, 3)}
    net, variables = C.supernet(setting, edges=disc_edges(disc))
    x, y = C.image_batch(setting)
    rcfg = RewardConfig(kind="nwot", path="discrete")

    def reward(v, an, ar, x, y):
        return score_architectures(net, v, an, ar, x, y, rcfg)

    archs = [
        C.random_archs(net, 1, seed=10 + 2 * i) for i in range(sizes["reward_reps"])
    ]
    compiled, tc = C.compile_fn(reward, variables, *archs[0], x, y)
    times = [C.time_calls(compiled, variables, *a, x, y, min_time=0.0) for a in archs]
    out["nwot_reward_s"] = st.median(times)
    out["nwot_reward_compile_s"] = tc
    _progress(
        "jaxdarts",
        f"NWOT reward {out['nwot_reward_s']:.3g} s ({disc_edges(disc)} edges)",
    )

    _, params, venv = _jax_disc_env(disc)
    steps = sizes["disc_episodes"] * 2 * EDGES
    out["disc_env_steps_per_s"], out["disc_env_compile_s"] = _random_policy_steps_per_s(
        venv, params, steps
    )
    _progress("jaxdarts", f"disc env {out['disc_env_steps_per_s']:.3g} steps/s")
    _, cparams, cvenv = _jax_cont_env(sizes["cont"])
    out["cont_env_steps_per_s"], out["cont_env_compile_s"] = _random_policy_steps_per_s(
        cvenv, cparams, sizes["cont_steps"]
    )

    _progress("jaxdarts", f"cont env {out['cont_env_steps_per_s']:.3g} steps/s")
    from benchmarks.rewards import weight_step_seconds

    cont = {**sizes["cont"], "image": (32, 32, 3)}
    out["weight_step_s"], out["weight_step_compile_s"] = weight_step_seconds(
        cont, min_time=0.0
    )
    n = sizes["n_steps"]
    init_fn, chunk_fn = make_train(PPOConfig(n_steps=n), venv)
    state = jax.jit(init_fn)(jax.random.key(0), params)
    chunk = functools.partial(chunk_fn, num_updates=1)
    compiled, tc = C.compile_fn(chunk, state, params)
    dt = C.time_calls(compiled, state, params, min_time=0.0, min_reps=1)
    out["ppo_timesteps_per_s"] = n / dt
    out["ppo_compile_s"] = tc
    return out


# ----------------------------------------------------------------------- driver
def _side(
    side: str, python: str, threads: int, quick: bool, reference: str | None
) -> dict[str, float]:
    """Runs one side in a subprocess pinned to ``threads`` CPUs; returns its dict."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if side == "jaxdarts":
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (repo, env.get("PYTHONPATH", "")) if p
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"{side}.json")
        cmd = [python, os.path.abspath(__file__), "--side", side, "--out", out]
        cmd += ["--threads", str(threads)] + (["--quick"] if quick else [])
        if reference:
            cmd += ["--reference", reference]
        print(f"  ({side}: {python}, {threads} threads)", flush=True)
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"the {side} side failed (exit {proc.returncode})")
        with open(out) as f:
            return json.load(f)


def _check_reference(path: str | None, python: str) -> None:
    if not path or not os.path.isfile(os.path.join(path, "environment.py")):
        raise SystemExit(
            f"--reference {path!r} is not a checkout of github.com/nidhishs/dartsrl "
            "(no environment.py there): `git clone "
            "https://github.com/nidhishs/dartsrl` and pass its folder"
        )
    probe = "import torch, stable_baselines3, gymnasium"
    if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        raise SystemExit(
            f"{python} cannot import torch, stable_baselines3 and gymnasium: make an "
            "environment with `pip install torch stable-baselines3 gymnasium` and "
            "pass its python with --reference-python"
        )


def run(
    rec,
    quick: bool,
    reference: str | None,
    reference_python: str | None = None,
    threads: int | None = None,
) -> None:
    """Both sides, then a row per metric and side and the jaxdarts/dartsrl ratio."""
    python = reference_python or sys.executable
    _check_reference(reference, python)
    threads = threads or len(os.sched_getaffinity(0))
    sizes = QUICK if quick else PAPER
    ref = _side("reference", python, threads, quick, reference)
    jd = _side("jaxdarts", sys.executable, threads, quick, None)
    conf = {
        "threads": threads,
        "disc": _label(sizes["disc"]),
        "disc_edges": disc_edges(sizes["disc"]),
        "cont": _label(sizes["cont"]),
        "n_steps": sizes["n_steps"],
    }
    for key, (label, unit, higher) in METRICS.items():
        rec.add("reference", f"{label} dartsrl", ref[key], unit, **conf)
        rec.add("reference", f"{label} jaxdarts", jd[key], unit, **conf)
        ratio = jd[key] / ref[key] if higher else ref[key] / jd[key]
        rec.add("reference", f"{label} speed-up", ratio, "x", **conf)
    for key in ("nwot_reward", "disc_env", "cont_env", "weight_step", "ppo"):
        rec.add("reference", f"jaxdarts {key} compile", jd[f"{key}_compile_s"], "s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/reference.py",
        description="jaxdarts vs the reference (nidhishs/dartsrl), same sizes and "
        "threads: table + JSON.",
    )
    p.add_argument("--reference", metavar="PATH", help="dartsrl checkout")
    p.add_argument(
        "--reference-python",
        metavar="PATH",
        help="python with torch, stable-baselines3, gymnasium (default: this one)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a check)")
    p.add_argument(
        "--threads", type=int, help="CPU threads of each side (default: all usable)"
    )
    p.add_argument("--json", metavar="OUT", help="write the results here")
    p.add_argument("--side", choices=("reference", "jaxdarts"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.side:  # a child: pin to the first --threads CPUs, time one side
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
        sizes = QUICK if args.quick else PAPER
        if args.side == "reference":
            result = reference_side(args.reference, sizes, args.threads)
        else:
            result = jaxdarts_side(sizes)
        with open(args.out, "w") as f:
            json.dump(result, f)
        return 0
    from benchmarks import common as C

    rec = C.Recorder()
    meta = C.device_info()
    meta.update(quick=args.quick, argv=sys.argv[1:], started=time.strftime("%F %T"))
    run(rec, args.quick, args.reference, args.reference_python, args.threads)
    C.print_table(rec.rows)
    if args.json:
        C.write_json(args.json, meta, rec.rows)
        print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # a script: the repo root, not this folder, on path
        sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    raise SystemExit(main())
