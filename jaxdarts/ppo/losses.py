"""GAE and the clipped PPO loss, with stable-baselines3 semantics.

Both functions work on plain arrays: :func:`compute_gae` on *one* environment's
trajectory (the trainer ``vmap``s it over environments) and :func:`ppo_loss` on one
minibatch of flattened transitions.

References:
  Schulman, Moritz, Levine, Jordan, Abbeel, "High-Dimensional Continuous Control
  Using Generalized Advantage Estimation", ICLR 2016, https://arxiv.org/abs/1506.02438.
  Schulman, Wolski, Dhariwal, Radford, Klimov, "Proximal Policy Optimization
  Algorithms", 2017, https://arxiv.org/abs/1707.06347.
  stable-baselines3: ``common/buffers.py`` (``RolloutBuffer.
  compute_returns_and_advantage``) and ``ppo/ppo.py`` (``PPO.train``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxdarts.ppo.networks import policy_and_value

Params = Any
ADV_EPS = 1e-8  # SB3: (adv - mean) / (std + 1e-8)


class PPOBatch(NamedTuple):
    """A minibatch of flattened rollout transitions.

    Attributes:
      obs: Observations ``[B, *obs_shape]`` (or already flat ``[B, D]``).
      actions: ``[B]`` int32 (discrete) or ``[B, action_dim]`` float32, as sampled
        (continuous actions are stored *unclipped*, as in SB3's buffer).
      log_probs: Log-probabilities of ``actions`` under the rollout policy ``[B]``.
      values: Value estimates of the rollout policy ``[B]`` (unused by the loss:
        SB3's default ``clip_range_vf=None``; kept for metrics).
      advantages: GAE advantages ``[B]`` (not yet normalised).
      returns: TD(λ) returns ``advantages + values`` ``[B]``.
    """

    obs: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    values: jax.Array
    advantages: jax.Array
    returns: jax.Array


def compute_gae(
    rewards: jax.Array,
    values: jax.Array,
    dones: jax.Array,
    last_value: jax.Array,
    last_done: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimates of one trajectory, as SB3 computes them.

    ``dones`` follows SB3's ``episode_starts`` convention (the same as CleanRL's
    ``dones``): ``dones[t]`` is 1 when observation ``t`` is the *first* observation of
    an episode, i.e. when the env step at ``t - 1`` returned ``done``. ``last_done``
    is the ``done`` returned by the last step (``t = T - 1``), i.e. whether the
    bootstrap observation ``last_value`` belongs to a new episode. SB3's loop::

        next_non_terminal[t] = 1 - dones[t + 1]      (t < T - 1)
                             = 1 - last_done         (t = T - 1)
        next_value[t]        = values[t + 1]  or  last_value
        delta[t] = rewards[t] + gamma * next_value[t] * next_non_terminal[t] - values[t]
        adv[t]   = delta[t] + gamma * lam * next_non_terminal[t] * adv[t + 1]
        returns  = adv + values

    ``dones[0]`` is therefore never read. There is no timeout bootstrap (the envs of
    this project never truncate).

    Args:
      rewards: ``[T]`` rewards ``r_t`` returned by the env step at ``t``.
      values: ``[T]`` value estimates ``V(o_t)`` of the rollout policy.
      dones: ``[T]`` episode-start flags of the observations (bool or float).
      last_value: ``[]`` value of the observation after the last step.
      last_done: ``[]`` ``done`` returned by the last step.
      gamma: Discount factor γ.
      lam: GAE parameter λ.

    Returns:
      ``(advantages, returns)``, both ``[T]`` float32.
    """
    if (
        rewards.ndim != 1
        or values.shape != rewards.shape
        or dones.shape != rewards.shape
    ):
        raise ValueError(
            "compute_gae works on one trajectory: rewards, values, dones must all be "
            f"[T]; got {rewards.shape}, {values.shape}, {dones.shape}"
        )
    rewards = rewards.astype(jnp.float32)
    values = values.astype(jnp.float32)
    starts = jnp.concatenate([dones[1:], jnp.reshape(last_done, (1,))])
    next_non_terminal = 1.0 - starts.astype(jnp.float32)
    next_values = jnp.concatenate(
        [values[1:], jnp.reshape(last_value, (1,)).astype(jnp.float32)]
    )
    deltas = rewards + gamma * next_values * next_non_terminal - values

    def backward(gae, xs):
        delta, nnt = xs
        gae = delta + gamma * lam * nnt * gae
        return gae, gae

    _, advantages = jax.lax.scan(
        backward, jnp.zeros((), jnp.float32), (deltas, next_non_terminal), reverse=True
    )
    return advantages, advantages + values


def normalize_advantages(advantages: jax.Array) -> jax.Array:
    """SB3's per-minibatch normalisation ``(A - mean) / (std + 1e-8)``.

    ``std`` is torch's default, the *unbiased* (``ddof=1``) estimate. As in SB3, a
    minibatch of one sample is left unnormalised (its std is undefined).

    Args:
      advantages: ``[B]``.

    Returns:
      ``[B]``.
    """
    if advantages.shape[0] <= 1:
        return advantages
    std = jnp.std(advantages, ddof=1)
    return (advantages - advantages.mean()) / (std + ADV_EPS)


def clipped_surrogate(
    ratio: jax.Array, advantages: jax.Array, clip: float
) -> jax.Array:
    """PPO's clipped surrogate loss (negated objective, Schulman et al. 2017, eq. 7).

    ``-mean(min(r A, clip(r, 1 - ε, 1 + ε) A))``.

    Args:
      ratio: Probability ratios ``π_θ(a|s) / π_old(a|s)`` ``[B]``.
      advantages: ``[B]`` (already normalised if desired).
      clip: ε.

    Returns:
      Scalar loss.
    """
    loss_1 = advantages * ratio
    loss_2 = advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    return -jnp.mean(jnp.minimum(loss_1, loss_2))


def ppo_loss(
    params: Params,
    batch: PPOBatch,
    clip: float = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
    normalize_advantage: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SB3's PPO loss on one minibatch.

    ``loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss`` with

    * ``policy_loss``: :func:`clipped_surrogate` of the ratio on the (per-minibatch
      normalised, unbiased std) advantages;
    * ``value_loss = mean((returns - V(o))²)``, no value clipping
      (``clip_range_vf=None``);
    * ``entropy_loss = -mean(entropy)``.

    Args:
      params: Agent variables (see :mod:`jaxdarts.ppo.networks`).
      batch: :class:`PPOBatch` with leading dimension ``B``.
      clip: Clip range ε.
      vf_coef: Value loss coefficient.
      ent_coef: Entropy coefficient.
      normalize_advantage: Python bool; normalise advantages per minibatch.

    Returns:
      ``(loss, metrics)``; ``metrics`` (gradients stopped) holds ``loss``,
      ``policy_loss``, ``value_loss``, ``entropy`` (mean entropy, i.e.
      ``-entropy_loss``), ``approx_kl`` (SB3's ``mean((exp(log_r) - 1) - log_r)``)
      and ``clip_fraction`` (``mean(|r - 1| > ε)``).
    """
    dist, values = policy_and_value(params, batch.obs)
    log_prob = dist.log_prob(batch.actions)
    entropy = dist.entropy()
    advantages = batch.advantages
    if normalize_advantage:
        advantages = normalize_advantages(advantages)
    log_ratio = log_prob - batch.log_probs
    ratio = jnp.exp(log_ratio)
    policy_loss = clipped_surrogate(ratio, advantages, clip)
    value_loss = jnp.mean(jnp.square(batch.returns - values))
    entropy_loss = -jnp.mean(entropy)
    loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": -entropy_loss,
        "approx_kl": jnp.mean((jnp.exp(log_ratio) - 1.0) - log_ratio),
        "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > clip).astype(jnp.float32)),
    }
    return loss, jax.lax.stop_gradient(metrics)
