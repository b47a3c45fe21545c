"""PPO training loop as a pure, jittable chunk of updates (stable-baselines3 parity).

``make_train(config, env)`` returns ``(init_fn, chunk_fn)``. ``chunk_fn`` runs
``num_updates`` PPO updates in one ``lax.scan``; each update is SB3's
``collect_rollouts`` + ``compute_returns_and_advantage`` + ``PPO.train``:

1. **Rollout**: ``n_steps`` lockstep steps of ``num_envs`` envs with actions sampled
   from the current policy (continuous actions clipped to [-1, 1] for the env but
   stored unclipped, as SB3 does).
2. **GAE** per env (:func:`jaxdarts.ppo.losses.compute_gae`, vmapped over envs).
3. **Optimisation**: ``n_epochs`` passes; each pass shuffles the flattened rollout
   (``n_steps * num_envs`` transitions, flattened env-major like SB3's
   ``swap_and_flatten``) and takes one Adam step per ``batch_size`` chunk, *including
   the last, smaller chunk* when ``batch_size`` does not divide the rollout: the
   full chunks run in a ``lax.scan`` and the remainder (a static size) in one more
   step, exactly SB3's minibatch sequence.

Everything random comes from ``TrainState.key``, so a seed gives bit-identical
results, and the chunk boundaries do not matter: ``chunk(chunk(s, K), K)`` equals
``chunk(s, 2K)``. Typical use::

    init_fn, chunk_fn = make_train(config, env)
    chunk = jax.jit(chunk_fn, static_argnums=2, donate_argnums=0)
    state = jax.jit(init_fn)(jax.random.key(seed), env_params)
    for _ in range(num_chunks):
        state, metrics = chunk(state, env_params, updates_per_chunk)
        ...  # log metrics, checkpoint state

For several independent seeds in one program use :func:`make_train_seeds`.

References:
  Schulman et al., "Proximal Policy Optimization Algorithms", 2017,
  https://arxiv.org/abs/1707.06347.
  stable-baselines3 ``ppo/ppo.py``, ``common/on_policy_algorithm.py``,
  ``common/buffers.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxdarts.ppo.losses import PPOBatch, compute_gae, ppo_loss
from jaxdarts.ppo.networks import act, init_agent, policy_and_value

Params = Any
PyTree = Any
TrackFn = Callable[[PyTree, PyTree, jax.Array, jax.Array], PyTree]


class VecEnv(Protocol):
    """A vectorised, lockstep environment of pure functions.

    Attributes:
      num_envs: Number of environments stepped together (``E``).
      obs_shape: Per-env observation shape, e.g. ``(224,)`` or ``(10, 448)``.
      action_kind: ``"discrete"`` or ``"continuous"``.
      action_dim: Number of discrete actions, or the Box dimension (Box is [-1, 1]).
    """

    num_envs: int
    obs_shape: tuple[int, ...]
    action_kind: str
    action_dim: int

    def reset(self, key: jax.Array, params: PyTree) -> tuple[jax.Array, PyTree]:
        """Returns ``(obs [E, *obs_shape], state)``."""
        ...

    def step(
        self, key: jax.Array, state: PyTree, action: jax.Array, params: PyTree
    ) -> tuple[jax.Array, PyTree, jax.Array, jax.Array, jax.Array, PyTree]:
        """Steps all envs with ``action`` ``[E]`` int32 or ``[E, action_dim]`` float32.

        Returns ``(obs, state, reward [E], terminated [E], truncated [E], info)``
        (the single-env gymnax contract with a leading env axis); envs auto-reset
        when ``terminated | truncated`` (the returned obs is then the first obs of
        the next episode). A truncation ends the episode like a termination here
        (no bootstrapping from the final observation).
        """
        ...

    # Optional (only for ``evaluate_policy(..., env_state=...)``):
    # ``reset_episode(key, state, params) -> (obs, state)`` starts a new episode of
    # every env while keeping what outlives an episode (e.g. drifted weights).


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """stable-baselines3 PPO defaults (``PPO("MlpPolicy", env)``).

    Attributes:
      learning_rate: Constant Adam learning rate.
      n_steps: Env steps *per env* per update (rollout = ``n_steps * num_envs``
        transitions). See :func:`config_for_num_envs`.
      batch_size: Minibatch size.
      n_epochs: Passes over the rollout per update.
      gamma: Discount factor.
      gae_lambda: GAE λ.
      clip_range: PPO clip ε.
      ent_coef: Entropy coefficient.
      vf_coef: Value-loss coefficient.
      max_grad_norm: Global gradient-norm clip.
      adam_eps: Adam ε (SB3 passes ``eps=1e-5`` to ``torch.optim.Adam``).
      normalize_advantage: Normalise advantages per minibatch.
    """

    learning_rate: float = 3e-4
    n_steps: int = 2048
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-5
    normalize_advantage: bool = True

    def __post_init__(self):
        if self.n_steps < 1 or self.batch_size < 1 or self.n_epochs < 1:
            raise ValueError(f"n_steps, batch_size, n_epochs must be >= 1: {self}")


def steps_per_env(transitions_per_update: int, num_envs: int) -> int:
    """``ceil(transitions_per_update / num_envs)``: n_steps that keeps the update size.

    SB3 counts ``n_steps`` per env; to keep "2048 transitions per update" with more
    envs, use this as ``n_steps`` (the rollout then has ``n_steps * num_envs >=
    transitions_per_update`` transitions, equal when ``num_envs`` divides it).
    """
    return -(-int(transitions_per_update) // int(num_envs))


def config_for_num_envs(
    config: PPOConfig, num_envs: int, transitions_per_update: int = 2048
) -> PPOConfig:
    """``config`` with ``n_steps = steps_per_env(transitions_per_update, num_envs)``."""
    return dataclasses.replace(
        config, n_steps=steps_per_env(transitions_per_update, num_envs)
    )


def make_optimizer(config: PPOConfig) -> optax.GradientTransformation:
    """SB3's optimiser: global-norm clip then Adam (constant lr, ε = 1e-5)."""
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adam(config.learning_rate, eps=config.adam_eps),
    )


@flax.struct.dataclass
class TrainState:
    """Everything a PPO run carries between updates.

    Attributes:
      params: Agent variables (:func:`jaxdarts.ppo.networks.init_agent`).
      opt_state: Optax state of :func:`make_optimizer`.
      env_state: The env's state pytree.
      last_obs: Observation to act on next ``[E, *obs_shape]``.
      last_done: SB3's ``_last_episode_starts`` ``[E]`` bool: whether ``last_obs``
        starts an episode (``True`` after ``init``, as in SB3).
      episode_return: Running undiscounted return of the current episode ``[E]``.
      episode_length: Running length of the current episode ``[E]`` int32.
      key: PRNG key; split once per update.
      num_updates: Number of PPO updates done ``[]`` int32.
      num_timesteps: Env transitions collected ``[]`` int32 (summed over envs).
      track: User pytree updated by ``track_fn`` once per update.
    """

    params: Params
    opt_state: optax.OptState
    env_state: PyTree
    last_obs: jax.Array
    last_done: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    key: jax.Array
    num_updates: jax.Array
    num_timesteps: jax.Array
    track: PyTree = None


class Transition(NamedTuple):
    """One rollout step of all envs (stacked by the rollout scan to ``[T, E, ...]``).

    Attributes:
      obs: Flattened observations acted on ``[E, D]``.
      actions: Sampled (unclipped) actions ``[E]`` or ``[E, action_dim]``.
      log_probs: ``[E]``.
      values: ``[E]``.
      rewards: ``[E]`` float32.
      episode_starts: Whether ``obs`` starts an episode ``[E]`` bool.
      dones: ``terminated | truncated`` of this step ``[E]`` bool.
      episode_returns: Undiscounted return of the episode that ended at this step
        (valid where ``dones``) ``[E]``.
      episode_lengths: Its length ``[E]`` int32 (valid where ``dones``).
      info: The env's info pytree ``[E, ...]``.
    """

    obs: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    values: jax.Array
    rewards: jax.Array
    episode_starts: jax.Array
    dones: jax.Array
    episode_returns: jax.Array
    episode_lengths: jax.Array
    info: PyTree


class EvalRollout(NamedTuple):
    """Result of :func:`evaluate_policy`, stacked over steps ``[S, E, ...]``.

    Attributes:
      obs: Observations acted on ``[S, E, *obs_shape]``.
      actions: Actions passed to ``env.step`` (continuous: clipped) ``[S, E, ...]``.
      rewards: ``[S, E]``.
      dones: ``terminated | truncated`` ``[S, E]``.
      info: Stacked info pytree ``[S, E, ...]``.
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    dones: jax.Array
    info: PyTree


def _env_action(action: jax.Array, action_kind: str) -> jax.Array:
    # SB3 clips Box actions to the space bounds before env.step; stores them raw.
    if action_kind == "continuous":
        return jnp.clip(action, -1.0, 1.0)
    return action


def _flat(obs: jax.Array, num_envs: int) -> jax.Array:
    return jnp.reshape(obs, (num_envs, -1)).astype(jnp.float32)


def collect_rollout(
    env: VecEnv,
    n_steps: int,
    state: TrainState,
    env_params: PyTree,
    key: jax.Array,
    act_fn: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] = act,
) -> tuple[TrainState, Transition]:
    """Runs ``n_steps`` lockstep env steps with the current (stochastic) policy.

    Args:
      env: The vectorised env.
      n_steps: Steps per env (static).
      state: Current :class:`TrainState` (its ``key`` is not used).
      env_params: Env parameters pytree.
      key: Rollout key.
      act_fn: ``act_fn(params, obs [E, D], key, False) -> (action, log_prob [E],
        value [E])``; default the policy's :func:`jaxdarts.ppo.networks.act`
        (the random-search baseline passes uniform actions).

    Returns:
      ``(state, traj)`` with env state, ``last_obs``/``last_done``, the running
      episode statistics and ``num_timesteps`` advanced, and ``traj`` a
      :class:`Transition` stacked to ``[n_steps, E, ...]``.
    """
    num_envs = env.num_envs

    def step(carry, step_key):
        env_state, obs, start, ep_ret, ep_len = carry
        k_act, k_env = jax.random.split(step_key)
        flat_obs = _flat(obs, num_envs)
        action, log_prob, value = act_fn(state.params, flat_obs, k_act, False)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, _env_action(action, env.action_kind), env_params
        )
        reward = jnp.asarray(reward, jnp.float32)
        done = jnp.asarray(terminated).astype(bool) | jnp.asarray(truncated)
        ep_ret = ep_ret + reward
        ep_len = ep_len + 1
        transition = Transition(
            obs=flat_obs,
            actions=action,
            log_probs=log_prob,
            values=value,
            rewards=reward,
            episode_starts=start,
            dones=done,
            episode_returns=ep_ret,
            episode_lengths=ep_len,
            info=info,
        )
        ep_ret = jnp.where(done, 0.0, ep_ret)
        ep_len = jnp.where(done, 0, ep_len)
        return (env_state, next_obs, done, ep_ret, ep_len), transition

    carry = (
        state.env_state,
        state.last_obs,
        state.last_done,
        state.episode_return,
        state.episode_length,
    )
    carry, traj = jax.lax.scan(step, carry, jax.random.split(key, n_steps))
    env_state, last_obs, last_done, ep_ret, ep_len = carry
    state = state.replace(
        env_state=env_state,
        last_obs=last_obs,
        last_done=last_done,
        episode_return=ep_ret,
        episode_length=ep_len,
        num_timesteps=state.num_timesteps + n_steps * num_envs,
    )
    return state, traj


def flatten_rollout(traj: Transition, advantages: jax.Array, returns: jax.Array):
    """``[T, E, ...]`` rollout -> ``[E * T, ...]`` :class:`PPOBatch` (env-major).

    Matches SB3's ``swap_and_flatten`` ordering, so index ``i = e * T + t``.
    """

    def swap_and_flatten(x):
        x = jnp.swapaxes(x, 0, 1)
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    return PPOBatch(
        obs=swap_and_flatten(traj.obs),
        actions=swap_and_flatten(traj.actions),
        log_probs=swap_and_flatten(traj.log_probs),
        values=swap_and_flatten(traj.values),
        advantages=swap_and_flatten(advantages),
        returns=swap_and_flatten(returns),
    )


def sgd_step(
    config: PPOConfig,
    tx: optax.GradientTransformation,
    params: Params,
    opt_state: optax.OptState,
    batch: PPOBatch,
) -> tuple[Params, optax.OptState, dict[str, jax.Array]]:
    """One Adam step on one minibatch; returns the loss metrics."""
    grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)
    (_, metrics), grads = grad_fn(
        params,
        batch,
        config.clip_range,
        config.vf_coef,
        config.ent_coef,
        config.normalize_advantage,
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics


def train_epochs(
    config: PPOConfig,
    tx: optax.GradientTransformation,
    params: Params,
    opt_state: optax.OptState,
    batch: PPOBatch,
    key: jax.Array,
) -> tuple[Params, optax.OptState, dict[str, jax.Array]]:
    """``n_epochs`` shuffled passes of minibatch updates over the rollout.

    Each epoch draws a fresh permutation of the ``N`` transitions and updates on
    consecutive ``batch_size`` slices of it; when ``N % batch_size = r > 0`` the last
    slice has ``r`` transitions, as in SB3's ``RolloutBuffer.get``.

    Returns:
      ``(params, opt_state, metrics)`` with each metric ``[n_epochs, n_minibatches]``.
    """
    n = batch.advantages.shape[0]
    bs = config.batch_size
    n_full, rem = divmod(n, bs)

    def minibatch(carry, mb):
        p, o, m = sgd_step(config, tx, *carry, mb)
        return (p, o), m

    def epoch(carry, epoch_key):
        # One gather of the whole rollout per epoch, then contiguous slices: the
        # same minibatches as gathering each slice of the permutation separately.
        perm = jax.random.permutation(epoch_key, n)
        shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=0), batch)
        full = jax.tree.map(
            lambda x: x[: n_full * bs].reshape(n_full, bs, *x.shape[1:]), shuffled
        )
        carry, metrics = jax.lax.scan(minibatch, carry, full)
        if rem:
            last = jax.tree.map(lambda x: x[n_full * bs :], shuffled)
            p, o, m = sgd_step(config, tx, *carry, last)
            carry = (p, o)
            metrics = jax.tree.map(
                lambda a, b: jnp.concatenate([a, b[None]]), metrics, m
            )
        return carry, metrics

    (params, opt_state), metrics = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(key, config.n_epochs)
    )
    return params, opt_state, metrics


def explained_variance(y_pred: jax.Array, y_true: jax.Array) -> jax.Array:
    """SB3's ``1 - Var[y_true - y_pred] / Var[y_true]`` (NaN when Var[y_true] = 0)."""
    var_y = jnp.var(y_true)
    return jnp.where(var_y == 0, jnp.nan, 1.0 - jnp.var(y_true - y_pred) / var_y)


def episode_metrics(traj: Transition) -> dict[str, jax.Array]:
    """Return statistics of the episodes that ended during the rollout.

    Returns:
      ``num_episodes`` (int32) and ``episode_return_mean/min/max`` and
      ``episode_length_mean`` (NaN when no episode ended).
    """
    done = traj.dones
    count = done.sum().astype(jnp.int32)
    some = count > 0
    ret = traj.episode_returns
    denom = jnp.maximum(count, 1)
    nan = jnp.float32(jnp.nan)
    return {
        "num_episodes": count,
        "episode_return_mean": jnp.where(
            some, jnp.where(done, ret, 0.0).sum() / denom, nan
        ),
        "episode_return_min": jnp.where(some, jnp.where(done, ret, jnp.inf).min(), nan),
        "episode_return_max": jnp.where(
            some, jnp.where(done, ret, -jnp.inf).max(), nan
        ),
        "episode_length_mean": jnp.where(
            some, jnp.where(done, traj.episode_lengths, 0).sum() / denom, nan
        ),
    }


def _raw_reward_metrics(raw: jax.Array, done: jax.Array) -> dict[str, jax.Array]:
    count = done.sum()
    nan = jnp.float32(jnp.nan)
    some = count > 0
    return {
        "reward_mean": jnp.where(
            some, jnp.where(done, raw, 0.0).sum() / jnp.maximum(count, 1), nan
        ),
        "reward_min": jnp.where(some, jnp.where(done, raw, jnp.inf).min(), nan),
        "reward_max": jnp.where(some, jnp.where(done, raw, -jnp.inf).max(), nan),
    }


def update_step(
    config: PPOConfig,
    env: VecEnv,
    tx: optax.GradientTransformation,
    track_fn: TrackFn | None,
    state: TrainState,
    env_params: PyTree,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One PPO update: rollout, GAE, ``n_epochs`` of minibatch steps, metrics.

    Metrics (scalars): ``num_episodes``, ``episode_return_mean/min/max``,
    ``episode_length_mean`` (over episodes that ended in this rollout; NaN when
    none), ``loss``, ``policy_loss``, ``value_loss``, ``entropy``, ``clip_fraction``
    (means over every minibatch step of every epoch, as SB3 logs them),
    ``approx_kl`` (mean over the *last* epoch's minibatches, as SB3 logs it),
    ``explained_variance`` (rollout values vs returns), ``learning_rate``, ``std``
    (continuous only: mean of ``exp(log_std)`` after the update) and
    ``num_timesteps``; with an ``info["valid"]`` from the env, ``invalid_rewards``
    (int32: episodes of this rollout that ended with an invalid score).
    """
    key, k_rollout, k_epochs = jax.random.split(state.key, 3)
    state, traj = collect_rollout(env, config.n_steps, state, env_params, k_rollout)
    _, last_value = policy_and_value(state.params, _flat(state.last_obs, env.num_envs))
    gae = jax.vmap(
        functools.partial(compute_gae, gamma=config.gamma, lam=config.gae_lambda),
        in_axes=(1, 1, 1, 0, 0),
        out_axes=1,
    )
    advantages, returns = gae(
        traj.rewards, traj.values, traj.episode_starts, last_value, state.last_done
    )
    batch = flatten_rollout(traj, advantages, returns)
    params, opt_state, loss_metrics = train_epochs(
        config, tx, state.params, state.opt_state, batch, k_epochs
    )
    track = state.track
    if track_fn is not None:
        track = track_fn(track, traj.info, traj.rewards, traj.dones)
    state = state.replace(
        params=params,
        opt_state=opt_state,
        key=key,
        num_updates=state.num_updates + 1,
        track=track,
    )
    metrics = episode_metrics(traj)
    if isinstance(traj.info, dict) and "raw_reward" in traj.info:
        # The env's own reward before any normalisation (e.g. the NWOT score).
        metrics.update(_raw_reward_metrics(traj.info["raw_reward"], traj.dones))
    if isinstance(traj.info, dict) and "valid" in traj.info:
        # Episodes whose reward was the invalid value (e.g. a singular NWOT kernel).
        bad = traj.dones & ~traj.info["valid"]
        metrics["invalid_rewards"] = bad.sum().astype(jnp.int32)
    for name, value in loss_metrics.items():
        metrics[name] = value[-1].mean() if name == "approx_kl" else value.mean()
    metrics["explained_variance"] = explained_variance(batch.values, batch.returns)
    metrics["learning_rate"] = jnp.float32(config.learning_rate)
    if env.action_kind == "continuous":
        metrics["std"] = jnp.exp(params["params"]["log_std"]).mean()
    metrics["num_timesteps"] = state.num_timesteps
    return state, metrics


def make_train(
    config: PPOConfig, env: VecEnv, track_fn: TrackFn | None = None
) -> tuple[Callable[..., TrainState], Callable[..., tuple[TrainState, dict]]]:
    """Builds the pure ``init`` and ``chunk`` functions of a PPO run.

    Args:
      config: :class:`PPOConfig`.
      env: A :class:`VecEnv` (only its functions and static sizes are used; it is
        closed over, so it must not hold large arrays — those go in ``env_params``).
      track_fn: Optional jittable ``track_fn(track, info, rewards, dones) -> track``
        applied once per update to the rollout's stacked ``info`` ``[n_steps, E,
        ...]``, ``rewards`` ``[n_steps, E]`` and ``dones`` ``[n_steps, E]`` (the
        ``done`` returned by each step), e.g. to keep a top-k of architectures.

    Returns:
      ``(init_fn, chunk_fn)``:

      * ``init_fn(key, env_params, track_init=None) -> TrainState``: initialises the
        agent and optimiser and resets the env.
      * ``chunk_fn(state, env_params, num_updates) -> (state, metrics)``:
        ``num_updates`` (a static Python int) updates in one ``lax.scan``;
        ``metrics`` is a dict of arrays with leading axis ``num_updates`` (see
        :func:`update_step`). Jit it with ``jax.jit(chunk_fn, static_argnums=2,
        donate_argnums=0)``; vmap it over seeds with :func:`make_train_seeds`.
    """
    if env.action_kind not in ("discrete", "continuous"):
        raise ValueError(f"unknown action_kind {env.action_kind!r}")
    tx = make_optimizer(config)

    def init_fn(
        key: jax.Array, env_params: PyTree, track_init: PyTree = None
    ) -> TrainState:
        key, k_agent, k_reset = jax.random.split(key, 3)
        params = init_agent(k_agent, env.obs_shape, env.action_kind, env.action_dim)
        obs, env_state = env.reset(k_reset, env_params)
        num_envs = env.num_envs
        return TrainState(
            params=params,
            opt_state=tx.init(params),
            env_state=env_state,
            last_obs=obs,
            last_done=jnp.ones((num_envs,), bool),
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            episode_length=jnp.zeros((num_envs,), jnp.int32),
            key=key,
            num_updates=jnp.zeros((), jnp.int32),
            num_timesteps=jnp.zeros((), jnp.int32),
            track=track_init,
        )

    return init_fn, scan_updates(
        functools.partial(update_step, config, env, tx, track_fn)
    )


def scan_updates(
    update: Callable[[TrainState, PyTree], tuple[TrainState, dict[str, jax.Array]]],
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """``chunk_fn(state, env_params, num_updates)``: ``num_updates`` calls of
    ``update(state, env_params)`` in one ``lax.scan`` (metrics stacked on a leading
    ``[num_updates]`` axis; ``num_updates`` must be static)."""

    def chunk_fn(
        state: TrainState, env_params: PyTree, num_updates: int
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        return jax.lax.scan(
            lambda s, _: update(s, env_params), state, None, length=num_updates
        )

    return chunk_fn


def make_train_seeds(
    config: PPOConfig,
    env: VecEnv,
    track_fn: TrackFn | None = None,
    env_params_axis: int | None = 0,
) -> tuple[Callable[..., TrainState], Callable[..., tuple[TrainState, dict]]]:
    """``make_train`` vmapped over a leading seed axis (independent searches).

    Args:
      config, env, track_fn: As in :func:`make_train`.
      env_params_axis: ``0`` when each seed has its own env params (e.g. its own
        supernet) stacked on a leading axis, ``None`` to share one set.

    Returns:
      ``(init_seeds, chunk_seeds)``:

      * ``init_seeds(keys [S], env_params, track_init=None) -> TrainState`` with a
        leading seed axis on every leaf (``track_init`` is shared and broadcast).
      * ``chunk_seeds(states, env_params, num_updates)`` -> ``(states, metrics)``
        with metrics ``[S, num_updates]``; jit it with ``static_argnums=2,
        donate_argnums=0``. Equivalent to
        ``jax.vmap(chunk_fn, in_axes=(0, env_params_axis, None))``.
    """
    init_fn, chunk_fn = make_train(config, env, track_fn)

    def init_seeds(keys, env_params, track_init=None):
        return jax.vmap(init_fn, in_axes=(0, env_params_axis, None))(
            keys, env_params, track_init
        )

    def chunk_seeds(states, env_params, num_updates: int):
        chunk = functools.partial(chunk_fn, num_updates=num_updates)
        return jax.vmap(chunk, in_axes=(0, env_params_axis))(states, env_params)

    return init_seeds, chunk_seeds


def evaluate_policy(
    params: Params,
    env: VecEnv,
    env_params: PyTree,
    key: jax.Array,
    num_steps: int,
    deterministic: bool,
    env_state: PyTree = None,
) -> EvalRollout:
    """Starts an episode and plays ``num_steps`` lockstep steps with the policy.

    Used to extract the final architecture: with ``num_steps`` = one episode length,
    the architecture is in the last step's ``info`` (or assembled from
    ``actions``). ``deterministic=True`` takes argmax / mean actions (the project's
    default genotype); ``False`` samples, like the reference's ``agent.predict``.
    ``env``, ``num_steps`` and ``deterministic`` are static: jit with
    ``jax.jit(evaluate_policy, static_argnames=("env", "num_steps",
    "deterministic"))`` (``env`` must be hashable, e.g. a frozen dataclass) or close
    over them with ``functools.partial``.

    By default the env starts fresh (``env.reset``). Given ``env_state`` (e.g. the
    ``TrainState.env_state`` at the end of a search, or a slice of it for fewer
    envs), the rollout instead starts a new episode of those envs with
    ``env.reset_episode``, keeping what outlives an episode: for the continuous env
    with the weight step, the supernet weights that drifted during the run.

    Args:
      params: Agent variables.
      env: The vectorised env.
      env_params: Env parameters pytree.
      key: PRNG key (reset, action sampling, env steps).
      num_steps: Steps to play.
      deterministic: Python bool.
      env_state: Optional env state ``[E, ...]`` to continue from.

    Returns:
      :class:`EvalRollout` stacked over ``num_steps``.
    """
    k_reset, k_steps = jax.random.split(key)
    if env_state is None:
        obs, env_state = env.reset(k_reset, env_params)
    else:
        obs, env_state = env.reset_episode(k_reset, env_state, env_params)

    def step(carry, step_key):
        env_state, obs = carry
        k_act, k_env = jax.random.split(step_key)
        action, _, _ = act(params, _flat(obs, env.num_envs), k_act, deterministic)
        action = _env_action(action, env.action_kind)
        next_obs, env_state, reward, terminated, truncated, info = env.step(
            k_env, env_state, action, env_params
        )
        done = jnp.asarray(terminated).astype(bool) | jnp.asarray(truncated)
        out = EvalRollout(
            obs=obs, actions=action, rewards=reward, dones=done, info=info
        )
        return (env_state, next_obs), out

    _, rollout = jax.lax.scan(
        step, (env_state, obs), jax.random.split(k_steps, num_steps)
    )
    return rollout
