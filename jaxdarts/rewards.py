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
a search: the reward is then ``invalid_reward`` (default 0.0, far below any NWOT of a
real batch, which is in the hundreds), and the returned ``valid`` mask says so.

References:
  Mellor, Turner, Storkey, Crowley. "Neural Architecture Search without Training",
  ICML 2021.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
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
      invalid_reward: reward of a singular kernel or a non-finite score.
    """

    kind: str = "nwot"
    path: str = "discrete"
    bn_train: bool = False
    invalid_reward: float = 0.0

    def __post_init__(self):
        if self.kind not in REWARDS:
            raise ValueError(
                f"unknown reward {self.kind!r}; choose one of {list(REWARDS)}"
            )
        if self.path not in ("discrete", "dense"):
            raise ValueError(
                f"reward path must be 'discrete' or 'dense', got {self.path!r}"
            )


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


def _reward(kind: str, logits, labels, stats, invalid: float):
    if kind == "nwot":
        r, ok = nwot_score(stats)
    elif kind == "acc":
        r = accuracy(logits, labels)
        ok = jnp.isfinite(logits).all()
    else:
        r = neg_loss(logits, labels)
        ok = jnp.isfinite(r)
    ok = ok & jnp.isfinite(r)
    return jnp.where(ok, r, jnp.float32(invalid)), ok


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
    return _reward(config.kind, logits, labels, stats, config.invalid_reward)


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
