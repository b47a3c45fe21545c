"""Pure architecture-search environments (gymnax-style).

Two environments act on the alphas of a DARTS supernet:

* **discrete**: 28-step episodes (14 normal edges, then 14 reduction edges). Action
  ``a`` sets the logit of op ``a`` on the current edge to a sentinel (1e6), so that edge
  becomes one-hot in the observation. Reward 0 until the last step, then the reward of
  the resulting architecture on a fresh validation batch.
* **continuous**: one edge per step, ``alpha_edge += lam * clip(action, -1, 1)``,
  ``sweeps`` sweeps of 28 steps per episode, frame-stacked observations, optionally the
  gradient of the validation loss with respect to the alphas in the observation, and
  optionally a periodic SGD step on the supernet weights (each env carries its own
  weights and optimiser state in its state). Reward at the end: accuracy or -loss.

One contract (gymnax's, with gymnasium's terminated/truncated pair), pure functions:

* ``reset(key, params) -> (obs, state)``
* ``step(key, state, action, params)
  -> (obs, state, reward, terminated, truncated, info)``, auto-resetting.

Many envs: ``jax.vmap(step, in_axes=(0, 0, 0, None))`` over keys, states and actions,
or :class:`LockstepEnv`, which is exactly that (plus the key split). The vmapped step
stays cheap: the episode-end work (the reward's supernet pass, the auto-reset) and the
periodic weight step sit behind :func:`lockstep_cond`, a ``lax.cond`` whose ``vmap``
rule branches once on "any env is due" instead of becoming a ``select`` that runs the
supernet on every step. Episodes have a fixed length, so envs that start together end
together and only the last step of an episode pays for a reward. Each env draws its
first validation batch from its reset key, so vmapped envs walk the validation set
from different places without an ``index`` argument.

Observation layouts: discrete / continuous without gradient,
``[softmax(a_N), softmax(a_R)]`` flattened (224 floats in the DARTS space); with
gradient ``[softmax(a_N), dL/da_N, softmax(a_R), dL/da_R]`` (448, blockwise as in the
reference code, where the paper's Eq. 10 interleaves per edge); continuous
observations are stacked ``[frame_stack, D]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax
from jax.custom_batching import custom_vmap
from jax.sharding import PartitionSpec as P

from jaxdarts import data as data_lib
from jaxdarts.rewards import (
    RewardConfig,
    guard_reward,
    logits_reward,
    neg_loss,
    score_one,
)
from jaxdarts.sharding import DATA_AXIS
from jaxdarts.spaces import NUM_EDGES
from jaxdarts.supernet import Supernet, SupernetConfig, get_supernet

__all__ = [
    "EnvConfig",
    "EnvParams",
    "EnvState",
    "NWOT_FLAVOURS",
    "ORIGINAL_NWOT_BATCH",
    "make_params",
    "reset",
    "reset_episode",
    "step",
    "observe",
    "episode_reward",
    "lockstep_cond",
    "map_envs",
    "nwot_original_batch",
    "LockstepEnv",
]

#: ``reference``: the env's (augmented, changing) validation batch and eval-mode BN;
#: ``original`` (Mellor et al.): one fixed, un-augmented batch of 128, train-mode BN.
NWOT_FLAVOURS = ("reference", "original")

#: Batch size of the original NWOT flavour.
ORIGINAL_NWOT_BATCH = 128


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Static description of an environment (hashable; a jit static).

    Attributes:
      kind: ``discrete`` or ``continuous``.
      net: the supernet.
      reward: how the episode-end reward is computed (its ``invalid_reward`` is the
        reward of an invalid score, below every valid reward of the kind).
      batch_size: images per reward (and per weight step).
      sentinel: logit written by a discrete action (reference: 1e6).
      alpha_std: alphas are re-drawn as ``alpha_std * N(0, 1)`` at every reset.
      lam: continuous action scale (alpha += lam * action).
      sweeps: continuous episode = ``sweeps`` sweeps of 28 steps.
      frame_stack: continuous observation frames.
      grad_obs: put d(val loss)/d(alpha) in the continuous observation.
      weight_step: periodic SGD step on the supernet weights (continuous).
      weight_step_period: sweeps between weight steps (paper 5; dartsrl 1).
      sgd_lr, sgd_momentum, sgd_weight_decay: the weight step's SGD.
      augment_valid: crop + flip the validation batch (the reference does).
      crop_pad: crop padding of the augmentation.
      reward_norm: return ``(r - mean) / std`` of this env's earlier episode rewards
        (0 for the first two episodes; clipped to [-10, 10]) instead of ``r`` (not in
        the reference; helps short runs on rewards with a large offset such as
        NWOT). ``info['raw_reward']`` always holds ``r``.
      nwot_flavour: ``reference`` or ``original`` (:data:`NWOT_FLAVOURS`). The
        original flavour (discrete env, nwot reward) scores every architecture on
        the same batch, the first 128 validation images, un-augmented, with
        train-mode BatchNorm; it ignores ``batch_size`` and ``augment_valid``.
    """

    kind: str = "discrete"
    net: SupernetConfig = SupernetConfig()
    reward: RewardConfig = RewardConfig()
    batch_size: int = 64
    sentinel: float = 1e6
    alpha_std: float = 1e-3
    lam: float = 0.01
    sweeps: int = 10
    frame_stack: int = 10
    grad_obs: bool = False
    weight_step: bool = False
    weight_step_period: int = 5
    sgd_lr: float = 1e-3
    sgd_momentum: float = 0.9
    sgd_weight_decay: float = 3e-4
    augment_valid: bool = True
    crop_pad: int = 4
    reward_norm: bool = False
    nwot_flavour: str = "reference"

    def __post_init__(self):
        if self.kind not in ("discrete", "continuous"):
            raise ValueError(
                f"env kind must be 'discrete' or 'continuous', got {self.kind!r}"
            )
        if self.kind == "continuous" and self.reward.kind == "nwot":
            raise ValueError(
                "the continuous env cannot use the nwot reward (as in the reference): "
                "use acc or loss"
            )
        if self.kind == "discrete" and (self.grad_obs or self.weight_step):
            raise ValueError("grad_obs and weight_step are for the continuous env only")
        for name in ("batch_size", "sweeps", "frame_stack", "weight_step_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"env {name} must be >= 1, got {getattr(self, name)}")
        if self.nwot_flavour not in NWOT_FLAVOURS:
            raise ValueError(
                f"env nwot_flavour must be one of {list(NWOT_FLAVOURS)}, got "
                f"{self.nwot_flavour!r}"
            )
        if self.nwot_original:
            if self.reward.kind != "nwot":
                raise ValueError(
                    "env nwot_flavour='original' is for the nwot reward; got the "
                    f"{self.reward.kind} reward: use nwot_flavour='reference'"
                )
            # The original flavour scores with batch statistics.
            reward = dataclasses.replace(self.reward, bn_train=True)
            object.__setattr__(self, "reward", reward)

    @property
    def nwot_original(self) -> bool:
        """Whether rewards follow the original NWOT (fixed batch of 128)."""
        return self.nwot_flavour == "original"

    @property
    def reward_batch_size(self) -> int:
        """Images per reward: ``batch_size``, or 128 for the original NWOT."""
        return ORIGINAL_NWOT_BATCH if self.nwot_original else self.batch_size

    @property
    def episode_length(self) -> int:
        return 2 * NUM_EDGES * (1 if self.kind == "discrete" else self.sweeps)

    @property
    def supernet(self) -> Supernet:
        return get_supernet(self.net)

    @property
    def num_ops(self) -> int:
        """Ops per edge: the discrete action count or the continuous action size."""
        return self.supernet.num_ops

    @property
    def frame_size(self) -> int:
        return 2 * NUM_EDGES * self.num_ops * (2 if self.grad_obs else 1)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """One env's observation: ``[D]`` (discrete) or ``[frame_stack, D]``."""
        if self.kind == "discrete":
            return (self.frame_size,)
        return (self.frame_stack, self.frame_size)


@struct.dataclass
class EnvParams:
    """Arrays an environment reads (shared by all envs; pass as a jit argument).

    Attributes:
      variables: supernet variables (the initial weights of continuous envs).
      valid_images: ``[Nv, H, W, C]`` validation half, raw (uint8 or [0,1] floats), in
        the fixed order rewards walk through it.
      valid_labels: ``[Nv]``.
      train_images, train_labels: the training half (weight step); may be empty.
      mean, std: ``[C]`` normalisation.
      config: static :class:`EnvConfig`.
    """

    variables: Any
    valid_images: jax.Array
    valid_labels: jax.Array
    train_images: jax.Array
    train_labels: jax.Array
    mean: jax.Array
    std: jax.Array
    config: EnvConfig = struct.field(pytree_node=False)


@struct.dataclass
class EnvState:
    """Per-env state.

    Attributes:
      alpha_normal, alpha_reduce: ``[14, K]`` raw alphas.
      t: step within the episode (int32).
      valid_pos: index of the next validation batch (int32; drawn at :func:`reset`).
      frames: ``[F, D]`` stacked observations (continuous; ``[1, D]`` for discrete).
      grad: ``[2, 14, K]`` last alpha gradient (continuous with ``grad_obs``).
      variables: this env's supernet variables (continuous with weight step) or None.
      opt_state: this env's SGD momentum (continuous with weight step) or None.
      episodes: completed episodes.
      reward_stats: ``[3]`` count, mean and sum of squared deviations of the episode
        rewards seen (Welford), for ``reward_norm``.
    """

    alpha_normal: jax.Array
    alpha_reduce: jax.Array
    t: jax.Array
    valid_pos: jax.Array
    frames: jax.Array
    grad: jax.Array
    variables: Any
    opt_state: Any
    episodes: jax.Array
    reward_stats: jax.Array


def _normalize_reward(state: EnvState, r, ok, config: EnvConfig):
    """Updates the running reward statistics; returns (reward for the agent, state)."""
    count, mean, m2 = (
        state.reward_stats[0],
        state.reward_stats[1],
        state.reward_stats[2],
    )
    std = jnp.sqrt(m2 / jnp.maximum(count, 1.0))
    # Like SB3's VecNormalize: clipped to [-10, 10]; 0 until two rewards were seen.
    normed = jnp.where(
        count >= 2, jnp.clip((r - mean) / (std + 1e-8), -10.0, 10.0), 0.0
    )
    new_count = count + ok
    delta = r - mean
    new_mean = jnp.where(ok, mean + delta / jnp.maximum(new_count, 1.0), mean)
    new_m2 = jnp.where(ok, m2 + delta * (r - new_mean), m2)
    state = state.replace(reward_stats=jnp.stack([new_count, new_mean, new_m2]))
    return (normed if config.reward_norm else r), state


def make_params(
    config: EnvConfig,
    variables: Any,
    valid_images,
    valid_labels,
    mean,
    std,
    train_images=None,
    train_labels=None,
) -> EnvParams:
    """Builds :class:`EnvParams`, checking shapes before anything is compiled."""
    need = config.reward_batch_size
    if len(valid_images) < need:
        if config.nwot_original:
            raise ValueError(
                f"the original NWOT flavour scores every architecture on the first "
                f"{need} validation images, but the validation half has "
                f"{len(valid_images)}: use a larger dataset or "
                "env.nwot_flavour=reference"
            )
        raise ValueError(
            f"the validation set has {len(valid_images)} images, fewer than the reward "
            f"batch size {config.batch_size}: lower --batch-size"
        )
    if config.weight_step and (
        train_images is None or len(train_images) < config.batch_size
    ):
        raise ValueError("the weight step needs a training half of at least one batch")
    if train_images is None:
        train_images = valid_images[:0]
        train_labels = valid_labels[:0]
    return EnvParams(
        variables=variables,
        valid_images=jnp.asarray(valid_images),
        valid_labels=jnp.asarray(valid_labels, jnp.int32),
        train_images=jnp.asarray(train_images),
        train_labels=jnp.asarray(train_labels, jnp.int32),
        mean=jnp.asarray(mean, jnp.float32),
        std=jnp.asarray(std, jnp.float32),
        config=config,
    )


def nwot_original_batch(images, labels, mean, std) -> tuple[jax.Array, jax.Array]:
    """The batch of the original NWOT flavour: the first 128 images, un-augmented.

    The env scores every architecture of a run on this batch of its validation half
    (in the half's fixed order); ``jaxdarts.score`` can call it on the same images
    for the same semantics (with train-mode BatchNorm, ``RewardConfig(bn_train=True)``).

    Args:
      images: ``[N, H, W, C]`` raw images (uint8 or [0, 1] floats), ``N >= 128``.
      labels: ``[N]``.
      mean, std: ``[C]`` normalisation.

    Returns:
      ``(x [128, H, W, C] normalised float32, y [128] int32)``.

    Raises:
      ValueError: fewer than 128 images.
    """
    b = ORIGINAL_NWOT_BATCH
    if len(images) < b:
        raise ValueError(
            f"the original NWOT flavour needs {b} images, got {len(images)}: use a "
            "larger dataset or the reference flavour"
        )
    x = data_lib.normalize(jnp.asarray(images[:b]), jnp.asarray(mean), jnp.asarray(std))
    return x, jnp.asarray(labels[:b], jnp.int32)


# ---------------------------------------------------------------------- helpers
def _frame(state: EnvState, config: EnvConfig) -> jax.Array:
    pn = jax.nn.softmax(state.alpha_normal, -1).reshape(-1)
    pr = jax.nn.softmax(state.alpha_reduce, -1).reshape(-1)
    if config.grad_obs:
        return jnp.concatenate(
            [pn, state.grad[0].reshape(-1), pr, state.grad[1].reshape(-1)]
        )
    return jnp.concatenate([pn, pr])


def observe(state: EnvState, params: EnvParams) -> jax.Array:
    """The observation of ``state`` (``config.obs_shape``)."""
    if params.config.kind == "discrete":
        return _frame(state, params.config)
    return state.frames


def _num_batches(n: int, b: int) -> int:
    return max(n // b, 1)


def _batch(key, images, labels, pos, params: EnvParams, augment: bool):
    """Batch ``pos`` of ``images`` in order (wrapping; short last batch skipped)."""
    b = params.config.batch_size
    nb = _num_batches(images.shape[0], b)
    start = (pos % nb) * b
    x = lax.dynamic_slice_in_dim(images, start, b)
    y = lax.dynamic_slice_in_dim(labels, start, b)
    if augment:
        x = data_lib.augment(
            key,
            x,
            crop_pad=params.config.crop_pad,
            flip=True,
            cutout=0,
            mean=params.mean,
            std=params.std,
        )
    else:
        x = data_lib.normalize(x, params.mean, params.std)
    return x, y


def _valid_batch(key, state: EnvState, params: EnvParams):
    """This env's next validation batch (normalised; augmented if configured)."""
    if params.config.nwot_original:
        return nwot_original_batch(
            params.valid_images, params.valid_labels, params.mean, params.std
        )
    return _batch(
        key,
        params.valid_images,
        params.valid_labels,
        state.valid_pos,
        params,
        params.config.augment_valid,
    )


def _variables(state: EnvState, params: EnvParams):
    return state.variables if state.variables is not None else params.variables


def _sgd(config: EnvConfig):
    return optax.chain(
        optax.add_decayed_weights(config.sgd_weight_decay),
        optax.sgd(config.sgd_lr, momentum=config.sgd_momentum),
    )


def _draw_alphas(key, config: EnvConfig):
    kn, kr = jax.random.split(key)
    shape = (NUM_EDGES, config.num_ops)
    return (
        config.alpha_std * jax.random.normal(kn, shape, jnp.float32),
        config.alpha_std * jax.random.normal(kr, shape, jnp.float32),
    )


# ---------------------------------------------------------------- reset / step
def reset(key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
    """A fresh env: first episode, weights from ``params``.

    The env's first validation batch is drawn from ``key`` (uniform over the
    validation batches), so envs reset with different keys walk the validation set
    from different places; later rewards take the following batches in order.

    Returns:
      ``(obs, state)``.
    """
    config = params.config
    k_episode, k_pos = jax.random.split(key)
    carry_weights = config.weight_step
    variables = params.variables if carry_weights else None
    opt_state = _sgd(config).init(variables["params"]) if carry_weights else None
    nb = _num_batches(params.valid_images.shape[0], config.batch_size)
    state = EnvState(
        alpha_normal=jnp.zeros((NUM_EDGES, config.num_ops), jnp.float32),
        alpha_reduce=jnp.zeros((NUM_EDGES, config.num_ops), jnp.float32),
        t=jnp.zeros((), jnp.int32),
        valid_pos=jax.random.randint(k_pos, (), 0, nb, jnp.int32),
        frames=jnp.zeros((1, config.frame_size), jnp.float32),
        grad=jnp.zeros((2, NUM_EDGES, config.num_ops), jnp.float32),
        variables=variables,
        opt_state=opt_state,
        episodes=jnp.zeros((), jnp.int32),
        reward_stats=jnp.zeros((3,), jnp.float32),
    )
    return reset_episode(k_episode, state, params)


def reset_episode(
    key: jax.Array, state: EnvState, params: EnvParams
) -> tuple[jax.Array, EnvState]:
    """Starts a new episode of ``state``'s env: fresh alphas, ``t = 0``.

    What outlives an episode carries over (the reference never resets it): this
    env's supernet weights and SGD state (weight step), its validation position, its
    episode count and reward statistics. ``step`` auto-resets with it; call it to
    start an extra episode from the end of a run, e.g. the final rollout of a search
    on the weights that drifted during the run.

    Returns:
      ``(obs, state)``.
    """
    config = params.config
    an, ar = _draw_alphas(key, config)
    n_frames = config.frame_stack if config.kind == "continuous" else 1
    fresh = state.replace(
        alpha_normal=an,
        alpha_reduce=ar,
        t=jnp.zeros((), jnp.int32),
        grad=jnp.zeros((2, NUM_EDGES, config.num_ops), jnp.float32),
    )
    frame = _frame(fresh, config)
    fresh = fresh.replace(
        frames=jnp.broadcast_to(frame, (n_frames, config.frame_size)).astype(
            jnp.float32
        )
    )
    return observe(fresh, params), fresh


def _apply_action(state: EnvState, action, config: EnvConfig) -> EnvState:
    t = state.t
    pos = t % (2 * NUM_EDGES)
    is_reduce = pos >= NUM_EDGES
    edge = pos % NUM_EDGES
    alphas = jnp.stack([state.alpha_normal, state.alpha_reduce])
    if config.kind == "discrete":
        alphas = alphas.at[is_reduce.astype(jnp.int32), edge, action].set(
            config.sentinel
        )
    else:
        delta = config.lam * jnp.clip(action.astype(jnp.float32), -1.0, 1.0)
        alphas = alphas.at[is_reduce.astype(jnp.int32), edge].add(delta)
    return state.replace(alpha_normal=alphas[0], alpha_reduce=alphas[1], t=t + 1)


def _weight_step(key, state: EnvState, params: EnvParams) -> EnvState:
    """One SGD step of this env's supernet on a training batch (train-mode BN)."""
    config = params.config
    net = config.supernet
    n = params.train_images.shape[0]
    idx = jax.random.choice(key, n, (config.batch_size,), replace=False)
    kx, kn = jax.random.split(jax.random.fold_in(key, 1))
    x = data_lib.augment(
        kx,
        params.train_images[idx],
        crop_pad=config.crop_pad,
        flip=True,
        cutout=0,
        mean=params.mean,
        std=params.std,
    )
    y = params.train_labels[idx]
    wn, wr = net.edge_weights(state.alpha_normal, state.alpha_reduce)
    variables = state.variables

    def loss_fn(p):
        v = {"params": p, "batch_stats": variables["batch_stats"]}
        logits, _, bs = net.apply_dense(v, wn, wr, x, train=True, key=kn, mutable=True)
        return -neg_loss(logits, y), bs

    grads, bs = jax.grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = _sgd(config).update(
        grads, state.opt_state, variables["params"]
    )
    new_params = optax.apply_updates(variables["params"], updates)
    return state.replace(
        variables={"params": new_params, "batch_stats": bs}, opt_state=opt_state
    )


def _val_loss_and_grad(key, state: EnvState, params: EnvParams):
    """Validation loss gradient and logits; advances valid_pos.

    BatchNorm as in the reward (running statistics unless ``reward.bn_train``), so
    that the episode-end reward computed from these logits is the reward's own.

    Returns:
      ``(state with grad, (logits [B, classes], labels [B]))``.
    """
    config = params.config
    net = config.supernet
    kx, kn = jax.random.split(key)
    x, y = _valid_batch(kx, state, params)
    variables = _variables(state, params)

    def loss_fn(an, ar):
        wn, wr = net.edge_weights(an, ar)
        logits, _, _ = net.apply_dense(
            variables, wn, wr, x, train=config.reward.bn_train, key=kn
        )
        return -neg_loss(logits, y), logits

    (_, logits), (gn, gr) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(
        state.alpha_normal, state.alpha_reduce
    )
    state = state.replace(grad=jnp.stack([gn, gr]), valid_pos=state.valid_pos + 1)
    return state, (logits, y)


def _reward_config(config: EnvConfig) -> RewardConfig:
    if config.kind == "continuous":
        return dataclasses.replace(config.reward, path="dense")
    return config.reward


def episode_reward(key: jax.Array, state: EnvState, params: EnvParams):
    """Reward of the architecture in ``state`` on its next validation batch.

    Invalid scores (singular kernel, non-finite logits or score) give the reward
    config's ``invalid_reward`` (:func:`jaxdarts.rewards.guard_reward`).

    Returns:
      ``(reward, valid, state)`` with ``valid_pos`` advanced.
    """
    config = params.config
    net = config.supernet
    kx, kn = jax.random.split(key)
    x, y = _valid_batch(kx, state, params)
    reward_cfg = _reward_config(config)
    if reward_cfg.path == "discrete":
        arch = net.choices(state.alpha_normal, state.alpha_reduce)
    else:
        arch = net.edge_weights(state.alpha_normal, state.alpha_reduce)
    r, ok = score_one(
        net,
        _variables(state, params),
        arch[0],
        arch[1],
        x,
        y,
        reward_cfg,
        kn if "noise" in net.op_names else None,
    )
    r, ok = guard_reward(r, ok, reward_cfg)
    return r, ok, state.replace(valid_pos=state.valid_pos + 1)


@functools.cache
def _jitted(fn: Callable) -> Callable:
    """``jax.jit(fn)``, one per function: :func:`_finish` and :func:`_finish_batched`
    call the same jitted reward on the same per-env shapes, so the second call hits
    the trace cache instead of tracing the supernet again."""
    return jax.jit(fn)


# ------------------------------------------------------------- lockstep branches
def _select(pred, on_true, on_false):
    """Per-env ``where(pred[i], on_true[i], on_false[i])`` over a pytree."""

    def one(a, b):
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(one, on_true, on_false)


def _on_one(fn, batched):
    """``jax.vmap(fn)`` for a batch of one: ``fn`` on the element, re-batched."""

    def call(operand):
        element = jax.tree.map(lambda x, b: x[0] if b else x, operand, batched)
        return jax.tree.map(lambda y: y[None], fn(element))

    return call


def lockstep_cond(
    pred: jax.Array,
    true_fn: Callable[[Any], Any],
    false_fn: Callable[[Any], Any],
    operand: Any,
    batched_true_fn: Callable[..., Any] | None = None,
) -> Any:
    """``lax.cond(pred, true_fn, false_fn, operand)`` that stays a branch under vmap.

    Under ``jax.vmap`` a ``lax.cond`` with a batched predicate becomes a ``select``
    that runs both branches for every element. Here the vmap rule instead branches
    once on ``any(pred)`` (an unbatched scalar, a real ``lax.cond``): when some
    element is due, ``true_fn`` runs for the whole batch and each element keeps its
    own branch's result; otherwise only ``false_fn`` runs. Envs in lockstep are all
    due or all not, so the expensive branch runs exactly when needed. Nested vmaps
    apply the rule at every level. Everything traced must come in through
    ``operand`` (``true_fn``/``false_fn`` may close over static values only).

    Args:
      pred: bool scalar.
      true_fn, false_fn: ``operand -> out`` of the same structure.
      operand: pytree.
      batched_true_fn: optional ``(operand, batched, axis_size) -> out`` with every
        output leaf batched over a leading axis of ``axis_size``, where ``batched``
        is the operand's tree of bools (whether a leaf has that axis); defaults to
        ``jax.vmap(true_fn)`` (e.g. pass one that loops with ``lax.map``, or
        shards, instead). A batch of one runs ``true_fn`` on its element.

    Returns:
      The branch's output.
    """

    # Jitted, so that each branch is traced once: `custom_vmap` traces the
    # unbatched cond before the rule runs, and the rule then batches the traced
    # branch (or, for a batch of one, calls it as it is) instead of tracing the
    # Python function again (a weight step: 5.7 s to trace under vmap, 0.6 s to
    # batch its trace). New wrappers: a later call traces its branches afresh.
    true_fn = jax.jit(lambda operand, fn=true_fn: fn(operand))
    false_fn = jax.jit(lambda operand, fn=false_fn: fn(operand))

    @custom_vmap
    def gated(pred, operand):
        return lax.cond(pred, true_fn, false_fn, operand)

    @gated.def_vmap
    def rule(axis_size, in_batched, pred, operand):
        pred_batched, op_batched = in_batched
        if axis_size == 1:  # the traced branches as they are: no batching pass
            vtrue, vfalse = _on_one(true_fn, op_batched), _on_one(false_fn, op_batched)
        else:
            axes = jax.tree.map(lambda b: 0 if b else None, op_batched)
            vfalse = jax.vmap(false_fn, in_axes=(axes,), axis_size=axis_size)
            if batched_true_fn is None:
                vtrue = jax.vmap(true_fn, in_axes=(axes,), axis_size=axis_size)
            else:
                vtrue = functools.partial(
                    batched_true_fn, batched=op_batched, axis_size=axis_size
                )

        def on(args):
            p, op = args
            out = vtrue(op)
            return _select(p, out, vfalse(op)) if pred_batched else out

        any_pred = jnp.any(pred) if pred_batched else pred
        out = lockstep_cond(any_pred, on, lambda a: vfalse(a[1]), (pred, operand))
        return out, jax.tree.map(lambda _: True, out)

    return gated(pred, operand)


# ------------------------------------------------------------------ episode end
def _close_episode(key, state: EnvState, r, ok, params: EnvParams):
    """Counts the episode, normalises the reward, auto-resets."""
    state = state.replace(episodes=state.episodes + 1)
    agent_r, state = _normalize_reward(state, r, ok, params.config)
    _, state = reset_episode(key, state, params)
    return agent_r, r, ok, state


def _finish(operand):
    """Episode end of one env: ``(agent reward, raw reward, valid, state)``."""
    key, state, params, cached = operand
    k_reward, k_reset = jax.random.split(key)
    if cached is not None:  # continuous with grad_obs: reuse this step's forward
        r, ok = logits_reward(*cached, _reward_config(params.config))
    else:
        r, ok, state = _jitted(episode_reward)(k_reward, state, params)
    return _close_episode(k_reset, state, r, ok, params)


def _carry_on(operand):
    _, state, _, _ = operand
    z = jnp.zeros((), jnp.float32)
    return z, z, jnp.ones((), bool), state


def _mesh_split(num_envs: int) -> int:
    """Devices of the current mesh's data axis that divide ``num_envs`` (else 1)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return 1
    n = mesh.shape[DATA_AXIS]
    return n if n > 1 and num_envs % n == 0 else 1


def map_envs(fn, keys, states, params, params_axis=None):
    """``fn(key, state, params)`` for each env, one after another (``lax.map``).

    A loop keeps the discrete supernet's per-edge ``lax.switch`` a real branch
    (``vmap`` would turn it into a ``select`` that runs every op). Under a mesh with
    a :data:`jaxdarts.sharding.DATA_AXIS` axis of ``n > 1`` devices that divides the
    env count (``jax.set_mesh``), the envs are split over the devices with
    ``jax.shard_map`` and each device loops over its own envs; otherwise (no mesh,
    one device) it is the plain loop.

    Args:
      fn: ``(key, state, params) -> pytree``.
      keys: ``[E]`` keys; states: pytree of ``[E, ...]``.
      params: shared (``params_axis=None``) or per env (``0``).

    Returns:
      ``fn``'s outputs stacked ``[E, ...]``.
    """

    def local(keys, states, params):
        if params_axis is None:
            return lax.map(lambda a: fn(a[0], a[1], params), (keys, states))
        return lax.map(lambda a: fn(*a), (keys, states, params))

    devices = _mesh_split(keys.shape[0])
    if devices == 1:
        return local(keys, states, params)
    env_spec = P(DATA_AXIS)
    params_spec = P() if params_axis is None else env_spec
    # check_vma=False: the supernet's loops start from unsharded constants (e.g. a
    # zero accumulator), which the varying-axes check would reject; every device
    # computes only its own envs, so nothing needs that check here.
    sharded = jax.shard_map(
        local,
        in_specs=(env_spec, env_spec, params_spec),
        out_specs=env_spec,
        check_vma=False,
    )
    return sharded(keys, states, params)


def _finish_batched(operand, batched, axis_size):
    """:func:`_finish` for a batch of envs (one batched or looped reward call)."""
    key, state, params, cached = operand
    key_b, state_b, params_b, cached_b = batched

    def batch(x, b):  # per-env parts to a leading env axis
        return jax.tree.map(
            lambda v, vb: v if vb else jnp.broadcast_to(v, (axis_size,) + v.shape),
            x,
            b,
        )

    key, state, cached = (
        batch(key, key_b),
        batch(state, state_b),
        batch(cached, cached_b),
    )
    p_axis = 0 if any(jax.tree.leaves(params_b)) else None
    if p_axis == 0:
        params = batch(params, params_b)
    ks = jax.vmap(jax.random.split)(key)
    k_reward, k_reset = ks[:, 0], ks[:, 1]
    config = params.config
    reward = _jitted(episode_reward)
    if cached is not None:
        r, ok = jax.vmap(logits_reward, (0, 0, None))(*cached, _reward_config(config))
    elif _reward_config(config).path == "discrete":
        r, ok, state = map_envs(reward, k_reward, state, params, p_axis)
    else:
        r, ok, state = jax.vmap(reward, (0, 0, p_axis))(k_reward, state, params)
    return jax.vmap(_close_episode, (0, 0, 0, 0, p_axis))(k_reset, state, r, ok, params)


def _post_action(key, state: EnvState, params: EnvParams):
    """Weight step and gradient observation of the continuous env (after an action).

    Returns:
      ``(state, cached)`` where ``cached`` is this step's validation ``(logits,
      labels)`` with ``grad_obs`` (the episode-end reward reuses them) or None.
    """
    config = params.config
    kw, kg = jax.random.split(key)
    if config.weight_step:
        t = state.t
        sweep_len = 2 * NUM_EDGES
        due = (t % sweep_len == 0) & ((t // sweep_len) % config.weight_step_period == 0)
        state = lockstep_cond(
            due,
            lambda op: _weight_step(*op),
            lambda op: op[1],
            (kw, state, params),
        )
    cached = None
    if config.grad_obs:
        state, cached = _val_loss_and_grad(kg, state, params)
    return state, cached


def _push_frame(state: EnvState, config: EnvConfig) -> EnvState:
    if config.kind == "discrete":
        return state
    frame = _frame(state, config)
    return state.replace(frames=jnp.concatenate([state.frames[1:], frame[None]], 0))


def step(key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams):
    """One step of one env (gymnax API), with auto-reset.

    ``jax.vmap(step, in_axes=(0, 0, 0, None))`` steps many envs; the supernet runs
    only on the steps that end an episode (and, for the continuous env, for the
    gradient observation and the periodic weight step).

    Args:
      key: PRNG key.
      state: :class:`EnvState`.
      action: int op index (discrete) or ``[K]`` floats (continuous; clipped to
        [-1, 1]).
      params: :class:`EnvParams`.

    Returns:
      ``(obs, state, reward, terminated, truncated, info)``: ``reward`` is 0 except at
      the end of an episode (normalised when ``reward_norm``); ``truncated`` is
      always False; ``info`` holds ``raw_reward`` (the reward before normalisation),
      ``valid`` (False for an invalid score), ``final_alphas`` ``[2, 14, K]`` and
      ``final_obs`` (the state before the auto-reset). On the last step ``obs`` is
      the first observation of the next episode.
    """
    config = params.config
    k_post, k_end = jax.random.split(key)
    state = _apply_action(state, action, config)
    state, cached = _post_action(k_post, state, params)
    state = _push_frame(state, config)
    terminated = state.t >= config.episode_length
    info = {
        "final_alphas": jnp.stack([state.alpha_normal, state.alpha_reduce]),
        "final_obs": observe(state, params),
    }
    reward, raw, ok, state = lockstep_cond(
        terminated,
        _finish,
        _carry_on,
        (k_end, state, params, cached),
        batched_true_fn=_finish_batched,
    )
    info["raw_reward"] = raw
    info["valid"] = ok
    truncated = jnp.zeros((), bool)
    return observe(state, params), state, reward, terminated, truncated, info


@dataclasses.dataclass(frozen=True)
class LockstepEnv:
    """``num_envs`` envs stepped together: ``vmap`` of :func:`reset`/:func:`step`.

    The PPO ``VecEnv``: the same functions and return tuple as the single env, with
    a leading ``[num_envs]`` axis, and one key split over the envs. Hashable (a jit
    static); holds no arrays.
    """

    config: EnvConfig
    num_envs: int = 1

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.config.obs_shape

    @property
    def action_kind(self) -> str:
        return self.config.kind

    @property
    def action_dim(self) -> int:
        return self.config.num_ops

    def reset(self, key: jax.Array, params: EnvParams):
        """Returns ``(obs [N, ...], state)``."""
        keys = jax.random.split(key, self.num_envs)
        return jax.vmap(reset, (0, None))(keys, params)

    def reset_episode(self, key: jax.Array, state: EnvState, params: EnvParams):
        """:func:`reset_episode` of every env; returns ``(obs [N, ...], state)``."""
        keys = jax.random.split(key, self.num_envs)
        return jax.vmap(reset_episode, (0, 0, None))(keys, state, params)

    def step(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams
    ):
        """Returns ``(obs, state, reward, terminated, truncated, info)``, each ``[N]``."""
        keys = jax.random.split(key, self.num_envs)
        return jax.vmap(step, (0, 0, 0, None))(keys, state, action, params)
