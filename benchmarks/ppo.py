"""Section ``ppo``: the PPO update's optimisation alone, and PPO end to end."""

from __future__ import annotations

import functools

import jax

from benchmarks import common as C
from jaxdarts.ppo import PPOBatch, PPOConfig, init_agent
from jaxdarts.ppo.train import make_optimizer, make_train, train_epochs

OBS_DIM = 224  # disc obs: 2 x 14 edges x 8 ops
ACTION_DIM = 8


def synthetic_rollout(kind: str, n: int = 2048, seed: int = 1) -> PPOBatch:
    """A flattened rollout of ``n`` transitions of random data (224-float obs)."""
    k = jax.random.split(jax.random.key(seed), 6)
    if kind == "discrete":
        actions = jax.random.randint(k[1], (n,), 0, ACTION_DIM)
    else:
        actions = jax.random.normal(k[1], (n, ACTION_DIM))
    return PPOBatch(
        obs=jax.random.normal(k[0], (n, OBS_DIM)),
        actions=actions,
        log_probs=-2.0 + 0.1 * jax.random.normal(k[2], (n,)),
        values=jax.random.normal(k[3], (n,)),
        advantages=jax.random.normal(k[4], (n,)),
        returns=jax.random.normal(k[5], (n,)),
    )


def time_update(kind: str, quick: bool) -> tuple[float, float]:
    """``(seconds per update, compile s)`` of SB3's 10 epochs x 32 minibatches of 64."""
    cfg = PPOConfig()
    tx = make_optimizer(cfg)
    params = init_agent(jax.random.key(0), (OBS_DIM,), kind, ACTION_DIM)
    opt_state = tx.init(params)
    batch = synthetic_rollout(kind)
    key = jax.random.key(2)
    fn = functools.partial(train_epochs, cfg, tx)
    compiled, tc = C.compile_fn(fn, params, opt_state, batch, key)
    dt = C.time_calls(compiled, params, opt_state, batch, key, min_time=1.0, min_reps=3)
    return dt, tc


def run(rec: C.Recorder, quick: bool) -> None:
    """PPO update optimisation (both action kinds), then disc-nwot end to end."""
    for kind in ("discrete", "continuous"):
        dt, tc = time_update(kind, quick)
        conf = {"transitions": 2048, "batch_size": 64, "n_epochs": 10, "obs": OBS_DIM}
        rec.add("ppo", f"update optimisation {kind}", dt, "s", **conf)
        rec.add("ppo", f"update optimisation {kind} compile", tc, "s", **conf)
    presets = ("quick",) if quick else ("quick", "paper")
    for preset in presets:
        end_to_end(rec, preset, num_envs=1)


def end_to_end(
    rec: C.Recorder, preset: str, num_envs: int, tag: str = "ppo"
) -> tuple[float, float]:
    """One disc-nwot update of 2048 transitions; returns ``(timesteps/s, compile s)``.

    Timesteps/s are measured after compile.
    """
    env_cfg, ppo_cfg, params, venv = C.search_setup(
        "disc-nwot", preset, num_envs, synthetic=preset == "paper"
    )
    init_fn, chunk_fn = make_train(ppo_cfg, venv)
    state = jax.jit(init_fn)(jax.random.key(0), params)
    chunk = functools.partial(chunk_fn, num_updates=1)
    net = env_cfg.net
    conf = {
        "preset": preset,
        "supernet": f"C{net.channels}-L{net.layers}",
        "batch": env_cfg.batch_size,
        "reward_path": env_cfg.reward.path,
        "n_steps": ppo_cfg.n_steps,
        "num_envs": venv.num_envs,
        "data": "synthetic 32x32x3" if preset == "paper" else "preset dataset",
    }
    compiled, tc = C.compile_fn(chunk, state, params)
    dt = C.time_calls(compiled, state, params, min_time=0.0, min_reps=1)
    steps = ppo_cfg.n_steps * venv.num_envs
    name = f"{preset} envs={venv.num_envs}"
    rec.add(tag, f"{name} timesteps/s", steps / dt, "1/s", **conf)
    rec.add(tag, f"{name} one update", dt, "s", **conf)
    rec.add(tag, f"{name} compile", tc, "s", **conf)
    return steps / dt, tc
