"""Random search as an agent: uniform actions through the PPO rollout, no update.

The baseline a NAS search is measured against. :func:`make_random` has the
signature and the state of :func:`jaxdarts.ppo.make_train` (the same
:class:`~jaxdarts.ppo.train.TrainState`, so run folders, checkpoints and resume work
unchanged), and its chunk plays the same env through the same
:func:`~jaxdarts.ppo.train.collect_rollout` with the same number of env steps per
update, but each action is drawn uniformly (discrete: an op index uniform over
``action_dim``; continuous: each coordinate uniform in [-1, 1]) and nothing is
learned: the agent's params and optimiser state never change. Each episode of the
discrete env is thus an architecture drawn uniformly (one op per edge); each episode
of the continuous env is a random walk of the alphas.

Metrics per update: ``num_episodes``, ``episode_return_*``,
``episode_length_mean``, ``reward_mean/min/max`` (the env's raw reward),
``entropy`` (of the uniform action distribution: ``log(action_dim)``, or
``action_dim * log 2`` for the box) and ``num_timesteps``; PPO's loss metrics are
absent.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdarts.ppo.train import (
    PPOConfig,
    PyTree,
    TrackFn,
    TrainState,
    VecEnv,
    _raw_reward_metrics,
    collect_rollout,
    episode_metrics,
    make_train,
    scan_updates,
)

__all__ = ["uniform_act", "uniform_entropy", "random_update", "make_random"]


def uniform_act(
    action_kind: str, action_dim: int, params, obs: jax.Array, key: jax.Array, _det
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Uniform actions in :func:`jaxdarts.ppo.networks.act`'s form.

    Args:
      action_kind: ``"discrete"`` or ``"continuous"``.
      action_dim: Number of discrete actions or the box dimension.
      params: Unused (the agent's params, kept for the signature).
      obs: Flattened observations ``[E, D]`` (only ``E`` is used).
      key: PRNG key.

    Returns:
      ``(action [E] int32 or [E, action_dim] float32 in [-1, 1], log_prob [E],
      value [E] zeros)``.
    """
    del params, _det
    n = obs.shape[0]
    if action_kind == "discrete":
        action = jax.random.randint(key, (n,), 0, action_dim, dtype=jnp.int32)
    else:
        action = jax.random.uniform(key, (n, action_dim), jnp.float32, -1.0, 1.0)
    log_prob = jnp.full((n,), -uniform_entropy(action_kind, action_dim), jnp.float32)
    return action, log_prob, jnp.zeros((n,), jnp.float32)


def uniform_entropy(action_kind: str, action_dim: int) -> float:
    """Entropy of the uniform action distribution (nats)."""
    if action_kind == "discrete":
        return math.log(action_dim)
    return action_dim * math.log(2.0)


def random_update(
    config: PPOConfig,
    env: VecEnv,
    track_fn: TrackFn | None,
    state: TrainState,
    env_params: PyTree,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One "update" of random search: a rollout of ``config.n_steps`` steps per
    env with uniform actions, the tracker, the metrics; params are untouched."""
    key, k_rollout = jax.random.split(state.key)
    act_fn = functools.partial(uniform_act, env.action_kind, env.action_dim)
    state, traj = collect_rollout(
        env, config.n_steps, state, env_params, k_rollout, act_fn=act_fn
    )
    track = state.track
    if track_fn is not None:
        track = track_fn(track, traj.info, traj.rewards, traj.dones)
    state = state.replace(key=key, num_updates=state.num_updates + 1, track=track)
    metrics = episode_metrics(traj)
    if isinstance(traj.info, dict) and "raw_reward" in traj.info:
        metrics.update(_raw_reward_metrics(traj.info["raw_reward"], traj.dones))
    metrics["entropy"] = jnp.float32(uniform_entropy(env.action_kind, env.action_dim))
    metrics["num_timesteps"] = state.num_timesteps
    return state, metrics


def make_random(
    config: PPOConfig, env: VecEnv, track_fn: TrackFn | None = None
) -> tuple[Callable[..., TrainState], Callable[..., tuple[TrainState, dict]]]:
    """``(init_fn, chunk_fn)`` of random search, drop-in for
    :func:`jaxdarts.ppo.make_train` (same init, same state, same env steps per
    update; only ``config.n_steps`` of ``config`` is used)."""
    init_fn, _ = make_train(config, env, track_fn)
    return init_fn, scan_updates(
        functools.partial(random_update, config, env, track_fn)
    )
