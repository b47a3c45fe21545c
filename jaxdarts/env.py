"""Pure architecture-search environments (gymnax-style).

Two environments act on the alphas of a DARTS supernet (paper §3, reference.md §2):

* **discrete**: 28-step episodes (14 normal edges, then 14 reduction edges). Action
  ``a`` sets the logit of op ``a`` on the current edge to a sentinel (1e6), so that edge
  becomes one-hot in the observation. Reward 0 until the last step, then the reward of
  the resulting architecture on a fresh validation batch.
* **continuous**: one edge per step, ``alpha_edge += lam * clip(action, -1, 1)``,
  ``sweeps`` sweeps of 28 steps per episode, frame-stacked observations, optionally the
  gradient of the validation loss with respect to the alphas in the observation, and
  optionally a periodic SGD step on the supernet weights (each env carries its own
  weights and optimiser state in its state). Reward at the end: accuracy or -loss.

Everything is a pure function of ``(key, state, action, params)``. ``reset``/``step``
are the single-env API (``step`` auto-resets); :class:`LockstepEnv` steps many envs at
once. Episodes have a fixed length and all envs start together, so they end together:
the episode-end reward of all envs is computed in one batched call under a ``lax.cond``
on the shared step counter, instead of a per-env ``cond`` (which ``vmap`` would turn
into a ``select`` that runs the supernet every step).

Observation layouts (reference.md §2): discrete / continuous without gradient,
``[softmax(a_N), softmax(a_R)]`` flattened (224 floats in the DARTS space); with
gradient ``[softmax(a_N), dL/da_N, softmax(a_R), dL/da_R]`` (448); continuous
observations are stacked ``[frame_stack, D]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from jaxdarts import data as data_lib
from jaxdarts.rewards import RewardConfig, neg_loss, score_one
from jaxdarts.spaces import NUM_EDGES
from jaxdarts.supernet import Supernet, SupernetConfig, get_supernet

__all__ = [
    "EnvConfig",
    "EnvParams",
    "EnvState",
    "make_params",
    "reset",
    "step",
    "observe",
    "LockstepEnv",
    "observation_space",
    "action_space",
]


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Static description of an environment (hashable; a jit static).

    Attributes:
      kind: ``discrete`` or ``continuous``.
      net: the supernet.
      reward: how the episode-end reward is computed.
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
        (0 for the first two episodes; clipped to [-10, 10]) instead of ``r`` (not in the reference; helps short
        runs on rewards with a large offset such as NWOT). ``info['raw_reward']``
        always holds ``r``.
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

    @property
    def episode_length(self) -> int:
        return 2 * NUM_EDGES * (1 if self.kind == "discrete" else self.sweeps)

    @property
    def supernet(self) -> Supernet:
        return get_supernet(self.net)

    @property
    def num_ops(self) -> int:
        return self.supernet.num_ops

    @property
    def frame_size(self) -> int:
        return 2 * NUM_EDGES * self.num_ops * (2 if self.grad_obs else 1)

    @property
    def obs_shape(self) -> tuple[int, ...]:
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
      valid_pos: index of the next validation batch (int32).
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
    if len(valid_images) < config.batch_size:
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


def observation_space(config: EnvConfig) -> dict[str, Any]:
    """``{'shape', 'low', 'high', 'dtype'}`` of one observation."""
    low = 0.0 if config.kind == "discrete" else -float("inf")
    high = 1.0 if config.kind == "discrete" else float("inf")
    return {"shape": config.obs_shape, "low": low, "high": high, "dtype": "float32"}


def action_space(config: EnvConfig) -> dict[str, Any]:
    """Discrete: ``{'kind': 'discrete', 'n': K}``; continuous: a ``[-1, 1]^K`` box."""
    if config.kind == "discrete":
        return {"kind": "discrete", "n": config.num_ops}
    return {"kind": "continuous", "shape": (config.num_ops,), "low": -1.0, "high": 1.0}


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


def _batch(key, images, labels, pos, params: EnvParams, augment: bool):
    """Batch ``pos`` of ``images`` in order (wrapping; short last batch skipped)."""
    b = params.config.batch_size
    nb = images.shape[0] // b
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


def reset(key: jax.Array, params: EnvParams, state: EnvState | None = None, index=0):
    """Starts an episode: fresh alphas, ``t = 0``.

    Supernet weights, optimiser state and the validation position carry over from
    ``state`` when given (the reference never resets them); the first reset takes the
    weights from ``params``. ``index`` offsets the first validation batch so that
    parallel envs see different batches.

    Returns:
      ``(obs, state)``.
    """
    config = params.config
    an, ar = _draw_alphas(key, config)
    k = config.num_ops
    if state is None:
        carry_weights = config.weight_step
        variables = params.variables if carry_weights else None
        opt_state = _sgd(config).init(variables["params"]) if carry_weights else None
        valid_pos = jnp.asarray(index, jnp.int32)
        episodes = jnp.zeros((), jnp.int32)
        reward_stats = jnp.zeros((3,), jnp.float32)
    else:
        variables, opt_state = state.variables, state.opt_state
        valid_pos, episodes = state.valid_pos, state.episodes
        reward_stats = state.reward_stats
    n_frames = config.frame_stack if config.kind == "continuous" else 1
    fresh = EnvState(
        alpha_normal=an,
        alpha_reduce=ar,
        t=jnp.zeros((), jnp.int32),
        valid_pos=valid_pos,
        frames=jnp.zeros((n_frames, config.frame_size), jnp.float32),
        grad=jnp.zeros((2, NUM_EDGES, k), jnp.float32),
        variables=variables,
        opt_state=opt_state,
        episodes=episodes,
        reward_stats=reward_stats,
    )
    frame = _frame(fresh, config)
    fresh = fresh.replace(frames=jnp.broadcast_to(frame, fresh.frames.shape))
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
    """Eval-mode validation loss, its alpha gradient and the logits; advances valid_pos."""
    config = params.config
    net = config.supernet
    kx, kn = jax.random.split(key)
    x, y = _valid_batch(kx, state, params)
    variables = _variables(state, params)

    def loss_fn(an, ar):
        wn, wr = net.edge_weights(an, ar)
        logits, _, _ = net.apply_dense(variables, wn, wr, x, key=kn)
        return -neg_loss(logits, y), logits

    (loss, logits), (gn, gr) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(
        state.alpha_normal, state.alpha_reduce
    )
    state = state.replace(grad=jnp.stack([gn, gr]), valid_pos=state.valid_pos + 1)
    return state, loss, logits, y


def episode_reward(key: jax.Array, state: EnvState, params: EnvParams):
    """Reward of the architecture in ``state`` on the next validation batch.

    Returns:
      ``(reward, valid, state)`` with ``valid_pos`` advanced.
    """
    config = params.config
    net = config.supernet
    kx, kn = jax.random.split(key)
    x, y = _valid_batch(kx, state, params)
    if config.kind == "discrete" and config.reward.path == "discrete":
        arch = net.choices(state.alpha_normal, state.alpha_reduce)
    else:
        arch = net.edge_weights(state.alpha_normal, state.alpha_reduce)
    reward_cfg = config.reward
    if config.kind == "continuous":
        reward_cfg = dataclasses.replace(reward_cfg, path="dense")
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
    return r, ok, state.replace(valid_pos=state.valid_pos + 1)


def _post_action(key, state: EnvState, params: EnvParams, t_shared, batched: bool):
    """Weight step and gradient observation of the continuous env (after an action)."""
    config = params.config
    kw, kg = jax.random.split(key)
    if config.weight_step:
        sweep_len = 2 * NUM_EDGES
        due = (t_shared % sweep_len == 0) & (
            (t_shared // sweep_len) % config.weight_step_period == 0
        )
        fn = jax.vmap(_weight_step, (0, 0, None)) if batched else _weight_step
        keys = jax.random.split(kw, state.t.shape[0]) if batched else kw
        state = lax.cond(due, lambda s: fn(keys, s, params), lambda s: s, state)
    loss = logits = labels = None
    if config.grad_obs:
        fn = (
            jax.vmap(_val_loss_and_grad, (0, 0, None))
            if batched
            else _val_loss_and_grad
        )
        keys = jax.random.split(kg, state.t.shape[0]) if batched else kg
        state, loss, logits, labels = fn(keys, state, params)
    return state, (loss, logits, labels)


def _push_frame(state: EnvState, config: EnvConfig) -> EnvState:
    if config.kind == "discrete":
        return state
    frame = _frame(state, config)
    return state.replace(frames=jnp.concatenate([state.frames[1:], frame[None]], 0))


def _final_reward_from(cached, config: EnvConfig):
    loss, logits, labels = cached
    if config.reward.kind == "acc":
        return jnp.mean(jnp.argmax(logits, -1) == labels, axis=-1).astype(jnp.float32)
    return -loss


def step(key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams):
    """One step of one env (gymnax API), with auto-reset.

    Args:
      action: int op index (discrete) or ``[K]`` floats (continuous).

    Returns:
      ``(obs, state, reward, terminated, truncated, info)``; on the last step of an
      episode ``obs`` is the first observation of the next episode and
      ``info['final_obs']`` the last one of the finished episode.
    """
    config = params.config
    k_post, k_reward, k_reset = jax.random.split(key, 3)
    state = _apply_action(state, action, config)
    state, cached = _post_action(k_post, state, params, state.t, batched=False)
    state = _push_frame(state, config)
    done = state.t >= config.episode_length
    final_obs = observe(state, params)
    info = {
        "final_alphas": jnp.stack([state.alpha_normal, state.alpha_reduce]),
        "valid": jnp.ones((), bool),
    }

    def finish(s):
        if config.kind == "continuous" and config.grad_obs:
            r, ok = _final_reward_from(cached, config), jnp.ones((), bool)
        else:
            r, ok, s = episode_reward(k_reward, s, params)
        s = s.replace(episodes=s.episodes + 1)
        agent_r, s = _normalize_reward(s, r, ok, config)
        _, s = reset(k_reset, params, s)
        return agent_r, r, ok, s

    def carry_on(s):
        z = jnp.zeros((), jnp.float32)
        return z, z, jnp.ones((), bool), s

    reward, raw, ok, state = lax.cond(done, finish, carry_on, state)
    info["valid"] = ok
    info["raw_reward"] = raw
    info["final_obs"] = final_obs
    return observe(state, params), state, reward, done, jnp.zeros((), bool), info


@dataclasses.dataclass(frozen=True)
class LockstepEnv:
    """``num_envs`` environments stepped together (the PPO ``VecEnv`` contract).

    ``step`` auto-resets; all envs share the episode clock, so episode-end rewards are
    computed for all envs in one batched call behind one ``lax.cond``.
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
        keys = jax.random.split(key, self.num_envs)
        index = jnp.arange(self.num_envs, dtype=jnp.int32)
        return jax.vmap(lambda k, i: reset(k, params, None, i))(keys, index)

    def step(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams
    ):
        """Returns ``(obs [N, ...], state, reward [N], done [N], info)``."""
        config = self.config
        n = self.num_envs
        k_post, k_reward, k_reset = jax.random.split(key, 3)
        state = jax.vmap(_apply_action, (0, 0, None))(state, action, config)
        t_shared = state.t[0]  # every env is at the same step
        state, cached = _post_action(k_post, state, params, t_shared, batched=True)
        state = jax.vmap(_push_frame, (0, None))(state, config)
        done_shared = t_shared >= config.episode_length
        alphas = jnp.stack([state.alpha_normal, state.alpha_reduce], 1)

        def finish(s):
            if config.kind == "continuous" and config.grad_obs:
                r = _final_reward_from(cached, config)
                ok = jnp.ones((n,), bool)
            else:
                keys = jax.random.split(k_reward, n)
                if config.kind == "discrete" and config.reward.path == "discrete":
                    # lax.map keeps the per-edge lax.switch a real branch (vmap would
                    # turn it into a select that runs every op).
                    r, ok, s = lax.map(
                        lambda a: episode_reward(a[0], a[1], params), (keys, s)
                    )
                else:
                    r, ok, s = jax.vmap(episode_reward, (0, 0, None))(keys, s, params)
            s = s.replace(episodes=s.episodes + 1)
            agent_r, s = jax.vmap(_normalize_reward, (0, 0, 0, None))(s, r, ok, config)
            _, s = jax.vmap(lambda k, st: reset(k, params, st))(
                jax.random.split(k_reset, n), s
            )
            return agent_r, r, ok, s

        def carry_on(s):
            z = jnp.zeros((n,), jnp.float32)
            return z, z, jnp.ones((n,), bool), s

        reward, raw, ok, state = lax.cond(done_shared, finish, carry_on, state)
        obs = jax.vmap(observe, (0, None))(state, params)
        done = jnp.broadcast_to(done_shared, (n,))
        info = {"final_alphas": alphas, "valid": ok, "raw_reward": raw}
        return obs, state, reward, done, info
