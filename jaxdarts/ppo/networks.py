"""Actor-critic networks with stable-baselines3 ``MlpPolicy`` parity.

SB3's default ``ActorCriticPolicy`` (``stable_baselines3/common/policies.py``) uses a
``Flatten`` features extractor, *separate* policy and value MLPs of two 64-unit
``tanh`` layers (``net_arch=dict(pi=[64, 64], vf=[64, 64])``), orthogonal weight init
with gain √2 on hidden layers, 0.01 on the action head and 1 on the value head, zero
biases, a categorical distribution over logits for ``Discrete`` actions and a diagonal
Gaussian with a state-independent ``log_std`` parameter (initialised to 0) for ``Box``
actions. This module reproduces that with Flax Linen and distrax.

The agent's variables are a plain pytree ``{"params": {...}}``. The functions below
recover the network's configuration from the structure of that pytree (the presence of
``log_std`` means continuous; the head's width is the action dimension; the first
kernel's fan-in is the flattened observation size), so only the variables need to be
carried around, checkpointed and vmapped.

References:
  Schulman et al., "Proximal Policy Optimization Algorithms", 2017,
  https://arxiv.org/abs/1707.06347.
  Raffin et al., "Stable-Baselines3: Reliable Reinforcement Learning
  Implementations", JMLR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any
HIDDEN_SIZES: tuple[int, ...] = (64, 64)
HIDDEN_GAIN = math.sqrt(2.0)
POLICY_HEAD_GAIN = 0.01
VALUE_HEAD_GAIN = 1.0
ACTION_KINDS = ("discrete", "continuous")


def _dense(features: int, gain: float, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=nn.initializers.orthogonal(gain),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class MLP(nn.Module):
    """``tanh`` MLP body (SB3 ``MlpExtractor`` branch) with orthogonal init.

    Attributes:
      hidden_sizes: Widths of the hidden layers.
    """

    hidden_sizes: Sequence[int] = HIDDEN_SIZES

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.hidden_sizes):
            x = jnp.tanh(_dense(width, HIDDEN_GAIN, f"dense_{i}")(x))
        return x


class ActorCritic(nn.Module):
    """Separate policy and value MLPs on a flat observation.

    Attributes:
      action_dim: Number of discrete actions, or the dimension of the Box action.
      continuous: ``True`` for a diagonal Gaussian policy, ``False`` for categorical.
      hidden_sizes: Hidden widths shared by both MLPs (SB3: 64-64).

    Returns from ``__call__`` (for ``x`` of shape ``[..., D]``):
      ``(head, value)`` where ``head`` is the logits ``[..., action_dim]`` (discrete)
      or the Gaussian mean ``[..., action_dim]`` (continuous) and ``value`` is
      ``[...]``. The continuous ``log_std`` parameter ``[action_dim]`` is read
      separately from the variables.
    """

    action_dim: int
    continuous: bool
    hidden_sizes: Sequence[int] = HIDDEN_SIZES

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        pi = MLP(self.hidden_sizes, name="policy_net")(x)
        vf = MLP(self.hidden_sizes, name="value_net")(x)
        head = _dense(self.action_dim, POLICY_HEAD_GAIN, "action_net")(pi)
        value = _dense(1, VALUE_HEAD_GAIN, "value_head")(vf)[..., 0]
        if self.continuous:
            # Registered here so that it lives in the same params tree; SB3 calls it
            # ``log_std`` and initialises it to ``log_std_init = 0``.
            self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return head, value


def _module_from_params(params: Params) -> ActorCritic:
    p = params["params"]
    continuous = "log_std" in p
    action_dim = p["action_net"]["kernel"].shape[-1]
    hidden = tuple(
        p["policy_net"][f"dense_{i}"]["kernel"].shape[-1]
        for i in range(len(p["policy_net"]))
    )
    return ActorCritic(
        action_dim=action_dim, continuous=continuous, hidden_sizes=hidden
    )


def obs_dim(params: Params) -> int:
    """Flattened observation size the agent was built for (the first fan-in)."""
    return params["params"]["policy_net"]["dense_0"]["kernel"].shape[0]


def flatten_obs(obs: jax.Array, in_dim: int) -> jax.Array:
    """Flattens trailing observation axes into one (SB3's ``FlattenExtractor``).

    The number of trailing axes is the smallest count whose product equals
    ``in_dim``, so ``[B, 10, 448]`` with ``in_dim = 4480`` becomes ``[B, 4480]`` and an
    unbatched ``[10, 448]`` becomes ``[4480]``. Pass observations with a size-1
    observation axis (e.g. ``obs_shape = (1, D)``) already flattened to avoid
    ambiguity.

    Args:
      obs: Observations ``[*batch, *obs_shape]``.
      in_dim: ``prod(obs_shape)``.

    Returns:
      ``[*batch, in_dim]`` float32.
    """
    obs = jnp.asarray(obs, jnp.float32)
    for k in range(obs.ndim - 1, -1, -1):
        if math.prod(obs.shape[k:]) == in_dim:
            return obs.reshape(*obs.shape[:k], in_dim)
    raise ValueError(f"observation shape {obs.shape} does not flatten to {in_dim}")


def init_agent(
    key: jax.Array,
    obs_shape: Sequence[int],
    action_kind: str,
    action_dim: int,
    hidden_sizes: Sequence[int] = HIDDEN_SIZES,
) -> Params:
    """Initialises the actor-critic variables.

    Args:
      key: PRNG key.
      obs_shape: Per-env observation shape, e.g. ``(224,)`` or ``(10, 448)``; it is
        flattened to ``prod(obs_shape)`` inputs.
      action_kind: ``"discrete"`` or ``"continuous"``.
      action_dim: Number of discrete actions or the Box dimension.
      hidden_sizes: Hidden widths of both MLPs (SB3 default 64-64).

    Returns:
      Variables ``{"params": {"policy_net", "value_net", "action_net",
      "value_head"[, "log_std"]}}``.
    """
    if action_kind not in ACTION_KINDS:
        raise ValueError(
            f"action_kind must be one of {ACTION_KINDS}, got {action_kind}"
        )
    module = ActorCritic(
        action_dim=int(action_dim),
        continuous=action_kind == "continuous",
        hidden_sizes=tuple(hidden_sizes),
    )
    dummy = jnp.zeros((1, math.prod(obs_shape)), jnp.float32)
    return module.init(key, dummy)


def policy_and_value(
    params: Params, obs: jax.Array
) -> tuple[distrax.Distribution, jax.Array]:
    """Action distribution and state value.

    Args:
      params: Variables from :func:`init_agent`.
      obs: Observations ``[*batch, *obs_shape]`` (see :func:`flatten_obs`).

    Returns:
      ``(dist, value)``: a ``distrax.Categorical`` over ``action_dim`` logits or a
      ``distrax.MultivariateNormalDiag`` with mean ``[*batch, action_dim]`` and scale
      ``exp(log_std)``, both with batch shape ``[*batch]``; and ``value`` ``[*batch]``.
    """
    module = _module_from_params(params)
    x = flatten_obs(obs, obs_dim(params))
    head, value = module.apply(params, x)
    if module.continuous:
        log_std = params["params"]["log_std"]
        scale = jnp.broadcast_to(jnp.exp(log_std), head.shape)
        dist = distrax.MultivariateNormalDiag(loc=head, scale_diag=scale)
    else:
        dist = distrax.Categorical(logits=head)
    return dist, value


def act(
    params: Params, obs: jax.Array, key: jax.Array, deterministic: bool = False
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Samples (or picks the mode of) an action, as SB3's ``policy.forward``.

    Args:
      params: Variables from :func:`init_agent`.
      obs: Observations ``[*batch, *obs_shape]``.
      key: PRNG key (unused when ``deterministic``).
      deterministic: Python bool; ``True`` takes the argmax (discrete) or the mean
        (continuous).

    Returns:
      ``(action, log_prob, value)``: action ``[*batch]`` int32 or
      ``[*batch, action_dim]`` float32 (unclipped; the trainer clips to [-1, 1] before
      ``env.step`` as SB3 does), ``log_prob`` ``[*batch]`` and ``value`` ``[*batch]``.
    """
    dist, value = policy_and_value(params, obs)
    if isinstance(deterministic, bool):
        action = dist.mode() if deterministic else dist.sample(seed=key)
    else:  # a traced flag: one compiled program serves both
        mode = dist.mode()
        action = jnp.where(
            deterministic, mode, dist.sample(seed=key).astype(mode.dtype)
        )
    log_prob = dist.log_prob(action)
    if isinstance(dist, distrax.Categorical):
        action = action.astype(jnp.int32)
    return action, log_prob, value
