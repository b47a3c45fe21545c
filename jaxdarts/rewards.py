"""Rewards: NWOT, accuracy and negative loss of supernet architectures.

All rewards are pure and batched over many architectures in one call
(:func:`score_architectures`). Higher is better for every reward.

* ``nwot``: ``log|det K|`` of the Hamming kernel of the binary ReLU codes
  (Mellor et al., 2021, Eq. 2; paper Eq. 12). The kernel is exact integer arithmetic
  (:class:`jaxdarts.supernet.NwotStats`); the log-determinant runs in float64.
* ``acc``: top-1 accuracy on the batch, in [0, 1].
* ``loss``: minus the mean cross-entropy.

A kernel that is singular (``det K = 0``, e.g. two identical images in the batch, or
codes that do not separate two inputs) or a non-finite reward never crashes or poisons
a search: the reward is then ``invalid_reward`` (per kind, below every valid reward
of that kind: :data:`INVALID_REWARD`), and the returned ``valid`` mask says so.

References:
  Mellor, Turner, Storkey, Crowley. "Neural Architecture Search without Training",
  ICML 2021.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdarts.supernet import NwotStats, Supernet

__all__ = [
    "REWARDS",
    "RewardConfig",
    "nwot_score",
    "accuracy",
    "neg_loss",
    "score_architectures",
    "score_one",
    "INVALID_REWARD",
    "LOSS_REWARD_FLOOR",
    "check_invalid_reward",
    "guard_reward",
    "logits_reward",
]

REWARDS = ("nwot", "acc", "loss")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """How architectures are scored.

    Attributes:
      kind: ``nwot``, ``acc`` or ``loss``.
      path: ``discrete`` (run only the chosen op per edge; architectures batched with
        ``lax.map``) or ``dense`` (every op, weighted; batched with ``vmap``).
      bn_train: BatchNorm with batch statistics (the original NWOT flavour) instead of
        running statistics (the reference flavour).
      invalid_reward: reward of a singular kernel or a non-finite score; ``None``
        (default) takes the kind's :data:`INVALID_REWARD`. It must be below every
        valid reward of the kind (see :func:`check_invalid_reward`).
    """

    kind: str = "nwot"
    path: str = "discrete"
    bn_train: bool = False
    invalid_reward: float | None = None

    def __post_init__(self):
        if self.kind not in REWARDS:
            raise ValueError(
                f"unknown reward {self.kind!r}; choose one of {list(REWARDS)}"
            )
        if self.path not in ("discrete", "dense"):
            raise ValueError(
                f"reward path must be 'discrete' or 'dense', got {self.path!r}"
            )
        object.__setattr__(self, "invalid_reward", check_invalid_reward(self))


def nwot_score(stats: NwotStats) -> tuple[jax.Array, jax.Array]:
    """``log|det K|`` of the NWOT kernel, computed in float64.

    Args:
      stats: kernel statistics of one batch (``gram [B, B]``).

    Returns:
      ``(score, valid)``: float32 score and a bool that is False when ``K`` is
      singular or the score is not finite.
    """
    k = stats.kernel()
    with jax.enable_x64(True):
        sign, logdet = jnp.linalg.slogdet(k.astype(jnp.float64))
        # K is an integer matrix, so a non-singular K has |det K| >= 1: a smaller
        # value is a singular K seen through rounding.
        valid = (sign != 0) & jnp.isfinite(logdet) & (logdet > jnp.log(0.5))
        score = logdet.astype(jnp.float32)
    return score, valid


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Top-1 accuracy. ``logits [B, C]``, ``labels [B]`` -> scalar in [0, 1]."""
    return jnp.mean(jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def neg_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Minus the mean cross-entropy. ``logits [B, C]``, ``labels [B]`` -> scalar."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    return jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), -1))


def _reward(config: RewardConfig, logits, labels, stats):
    """The guarded reward of one forward (:func:`guard_reward`)."""
    if config.kind == "nwot":
        r, ok = nwot_score(stats)
    elif config.kind == "acc":
        r = accuracy(logits, labels)
        ok = jnp.isfinite(logits).all()
    else:
        r = neg_loss(logits, labels)
        ok = jnp.isfinite(r)
    return guard_reward(r, ok, config)


def score_one(
    net: Supernet,
    variables: dict[str, Any],
    arch_normal: jax.Array,
    arch_reduce: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    config: RewardConfig,
    key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Reward of one architecture.

    Args:
      arch_normal, arch_reduce: ``[14]`` op indices into ``net.op_names`` for the
        discrete path, or ``[14, D]`` edge weights for the dense path.
      images: ``[B, H, W, C]`` normalised images; labels: ``[B]`` int.

    Returns:
      ``(reward, valid)`` scalars.
    """
    collect = config.kind == "nwot"
    apply = net.apply_discrete if config.path == "discrete" else net.apply_dense
    logits, stats, _ = apply(
        variables,
        arch_normal,
        arch_reduce,
        images,
        train=config.bn_train,
        key=key,
        collect=collect,
    )
    return _reward(config, logits, labels, stats)


def score_architectures(
    net: Supernet,
    variables: dict[str, Any],
    arch_normal: jax.Array,
    arch_reduce: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    config: RewardConfig,
    key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Rewards of ``A`` architectures on one batch, in one call.

    Args:
      arch_normal, arch_reduce: ``[A, 14]`` op indices (discrete path) or
        ``[A, 14, D]`` edge weights (dense path).
      images: ``[B, H, W, C]`` shared by all architectures, or ``[A, B, H, W, C]``
        (one batch per architecture); labels ``[B]`` or ``[A, B]`` likewise.
      key: PRNG key for the noise op; split per architecture.

    Returns:
      ``(rewards [A], valid [A])``.
    """
    n = arch_normal.shape[0]
    keys = jax.random.split(key if key is not None else jax.random.key(0), n)
    per_arch_data = images.ndim == 5
    use_key = key is not None

    def one(an, ar, x, y, k):
        return score_one(net, variables, an, ar, x, y, config, k if use_key else None)

    if config.path == "discrete":
        if per_arch_data:
            return lax.map(
                lambda a: one(*a), (arch_normal, arch_reduce, images, labels, keys)
            )
        return lax.map(
            lambda a: one(a[0], a[1], images, labels, a[2]),
            (arch_normal, arch_reduce, keys),
        )
    axes = 0 if per_arch_data else None
    return jax.vmap(one, in_axes=(0, 0, axes, axes, 0))(
        arch_normal, arch_reduce, images, labels, keys
    )


# ------------------------------------------------------------- invalid rewards
#: Lowest valid ``loss`` reward: ``-CE`` is clipped here (a mean true-class
#: probability below ``e**-100``), so that a fixed invalid value can lie below it.
LOSS_REWARD_FLOOR = -100.0

#: Default reward of an invalid score (singular NWOT kernel, non-finite logits or
#: score), per kind; each is below every valid value of its kind:
#:
#: * ``nwot``: -1. A non-singular integer kernel has ``|det K| >= 1``, so a valid
#:   score is ``log|det K| >= 0`` (scores of real batches are in the hundreds).
#: * ``acc``: -1. Valid accuracies are in [0, 1].
#: * ``loss``: -101. Valid rewards ``-CE`` are clipped to ``>= -100``.
#:
#: Each is a small step below the kind's valid range rather than a huge number: a PPO
#: value network regresses the returns, and one reward thousands of times larger than
#: the others would swamp its loss and, through per-minibatch advantage
#: normalisation, the policy update of every minibatch that holds it.
INVALID_REWARD = {"nwot": -1.0, "acc": -1.0, "loss": LOSS_REWARD_FLOOR - 1.0}

# Infimum of the valid rewards of each kind (an invalid value must be below it).
_VALID_LOWER = {"nwot": float(np.log(0.5)), "acc": 0.0, "loss": LOSS_REWARD_FLOOR}


def check_invalid_reward(config: RewardConfig) -> float:
    """The invalid reward of ``config`` (its kind's default when ``None``).

    Raises:
      ValueError: a given value is not below every valid reward of the kind.
    """
    value = config.invalid_reward
    if value is None:
        return INVALID_REWARD[config.kind]
    value = float(value)
    if not value < _VALID_LOWER[config.kind]:
        raise ValueError(
            f"invalid_reward {value} for the {config.kind} reward is not below every "
            f"valid {config.kind} reward (those are >= {_VALID_LOWER[config.kind]:.3g}): "
            f"leave env.invalid_reward unset (null) for the default "
            f"{INVALID_REWARD[config.kind]} or choose a lower value"
        )
    return value


def guard_reward(
    reward: jax.Array, valid: jax.Array, config: RewardConfig
) -> tuple[jax.Array, jax.Array]:
    """Applies the invalid-reward rule: ``(reward or invalid value, valid)``.

    ``valid`` is and-ed with ``isfinite(reward)``; a ``loss`` reward is clipped to
    :data:`LOSS_REWARD_FLOOR`. Idempotent, so it may follow :func:`score_one`.
    """
    valid = valid & jnp.isfinite(reward)
    if config.kind == "loss":
        reward = jnp.maximum(reward, LOSS_REWARD_FLOOR)
    invalid = jnp.float32(check_invalid_reward(config))
    return jnp.where(valid, reward, invalid).astype(jnp.float32), valid


def logits_reward(
    logits: jax.Array, labels: jax.Array, config: RewardConfig
) -> tuple[jax.Array, jax.Array]:
    """``acc`` or ``loss`` reward of given logits, guarded like :func:`score_one`.

    Args:
      logits: ``[B, classes]``; labels: ``[B]`` int.

    Returns:
      ``(reward, valid)`` scalars.

    Raises:
      ValueError: for the ``nwot`` reward (it needs the ReLU codes, not logits).
    """
    if config.kind == "nwot":
        raise ValueError("the nwot reward cannot be computed from logits")
    r = accuracy(logits, labels) if config.kind == "acc" else neg_loss(logits, labels)
    return guard_reward(r, jnp.isfinite(logits).all(), config)
