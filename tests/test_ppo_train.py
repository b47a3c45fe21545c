"""PPO trainer: learning on a toy "edge bandit", determinism, resumption, seed vmap."""

import dataclasses
import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts.ppo import train as ppo_train
from jaxdarts.ppo.losses import PPOBatch
from jaxdarts.ppo.networks import init_agent
from jaxdarts.ppo.train import (
    PPOConfig,
    config_for_num_envs,
    evaluate_policy,
    make_train,
    make_train_seeds,
    steps_per_env,
)

L = 4  # edges (steps per episode)
K = 3  # ops per edge


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class EdgeState:
    step: jax.Array  # [E] int32, edge to decide next
    score: jax.Array  # [E] float32, running per-edge score
    arch: jax.Array  # [E, L] chosen op (or continuous value) per edge


@dataclasses.dataclass(frozen=True)
class EdgeBandit:
    """Toy VecEnv with the jaxdarts contract, shaped like the discrete search env.

    An episode is ``L`` steps; step ``t`` picks the op of edge ``t``. The observation
    is the one-hot of ``t``. The only reward comes at the last step: the fraction of
    edges that got the best op ``params["best"][t]`` (discrete), or the mean of
    ``1 - |a_t - params["target"][t]|`` (continuous, ``action_dim = 1``). The maximum
    return is 1 in both cases. Auto-resets on done.
    """

    num_envs: int
    continuous: bool = False

    @property
    def obs_shape(self):
        return (L,)

    @property
    def action_kind(self):
        return "continuous" if self.continuous else "discrete"

    @property
    def action_dim(self):
        return 1 if self.continuous else K

    def _obs(self, step):
        return jax.nn.one_hot(step, L, dtype=jnp.float32)

    def reset(self, key, params):
        del key, params
        e = self.num_envs
        state = EdgeState(
            step=jnp.zeros((e,), jnp.int32),
            score=jnp.zeros((e,), jnp.float32),
            arch=jnp.zeros((e, L), jnp.float32),
        )
        return self._obs(state.step), state

    def step(self, key, state, action, params):
        del key
        t = state.step
        if self.continuous:
            value = action[:, 0]
            hit = 1.0 - jnp.abs(value - params["target"][t])
        else:
            value = action.astype(jnp.float32)
            hit = (action == params["best"][t]).astype(jnp.float32)
        score = state.score + hit
        arch = state.arch.at[jnp.arange(self.num_envs), t].set(value)
        done = t + 1 == L
        reward = jnp.where(done, score / L, 0.0)
        info = {"arch": arch, "score": score / L}
        keep = lambda x, fresh: jnp.where(  # noqa: E731
            done.reshape(done.shape + (1,) * (x.ndim - 1)), fresh, x
        )
        new_state = EdgeState(
            step=keep(t + 1, jnp.zeros_like(t)),
            score=keep(score, jnp.zeros_like(score)),
            arch=keep(arch, jnp.zeros_like(arch)),
        )
        truncated = jnp.zeros_like(done)
        return self._obs(new_state.step), new_state, reward, done, truncated, info


DISC_PARAMS = {"best": jnp.array([0, 1, 2, 1])}
CONT_PARAMS = {"target": jnp.array([-0.5, 0.5, 0.0, 0.25])}


def best_track_fn(track, info, rewards, dones):
    """Keeps the best finished architecture (a top-1 buffer), jittable."""
    del rewards
    score = jnp.where(dones, info["score"], -jnp.inf).reshape(-1)
    i = jnp.argmax(score)
    better = score[i] > track["score"]
    arch = info["arch"].reshape(-1, L)[i]
    return {
        "score": jnp.where(better, score[i], track["score"]),
        "arch": jnp.where(better, arch, track["arch"]),
    }


TRACK_INIT = {"score": jnp.float32(-jnp.inf), "arch": jnp.zeros((L,), jnp.float32)}


@functools.cache
def trainer(config, env, track=False):
    """Jitted ``(init, chunk)``; cached so each configuration compiles once."""
    init_fn, chunk_fn = make_train(config, env, best_track_fn if track else None)
    return jax.jit(init_fn), jax.jit(chunk_fn, static_argnums=2, donate_argnums=0)


def run(config, env, env_params, seed, chunks, track=False):
    init, chunk = trainer(config, env, track)
    state = init(jax.random.key(seed), env_params, TRACK_INIT if track else None)
    metrics = []
    for n in chunks:
        state, m = chunk(state, env_params, n)
        metrics.append(m)
    metrics = jax.tree.map(lambda *xs: np.concatenate(xs), *metrics)
    return state, metrics


evaluate = jax.jit(evaluate_policy, static_argnums=(1, 4, 5))


def _np(x):
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def _is_key(x):
    return jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def assert_trees_equal(a, b):
    """Bitwise equality of two pytrees (PRNG keys compared by their data)."""
    equal = functools.partial(np.testing.assert_array_equal, strict=True)
    jax.tree.map(lambda x, y: equal(_np(x), _np(y)), a, b)


def test_steps_per_env_keeps_2048_transitions():
    assert steps_per_env(2048, 1) == 2048
    assert steps_per_env(2048, 8) == 256
    assert steps_per_env(2048, 3) == 683  # ceil(682.67); rollout 2049 transitions
    assert config_for_num_envs(PPOConfig(), 16).n_steps == 128
    assert PPOConfig() == PPOConfig(
        learning_rate=3e-4,
        n_steps=2048,
        batch_size=64,
        n_epochs=10,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        adam_eps=1e-5,
        normalize_advantage=True,
    )


def test_learns_discrete_edge_bandit_and_tracks_best():
    # 8 envs x 32 steps = 256 transitions (64 episodes) per update; SB3 defaults
    # otherwise (lr 3e-4, batch 64, 10 epochs -> 40 Adam steps per update).
    env = EdgeBandit(num_envs=8)
    config = PPOConfig(n_steps=32)
    state, m = run(config, env, DISC_PARAMS, 0, [15], track=True)
    assert m["num_episodes"].tolist() == [64] * 15
    assert m["num_timesteps"][-1] == 15 * 256
    # A random policy scores 1/3 on average; require >= 0.9 of the max return (1).
    assert m["episode_return_mean"][0] < 0.6
    assert m["episode_return_mean"][-1] >= 0.9, m["episode_return_mean"]
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"):
        assert np.isfinite(m[name]).all(), name
    np.testing.assert_allclose(m["learning_rate"], 3e-4)
    assert m["entropy"][-1] < m["entropy"][0]
    # The deterministic policy picks the best op on every edge.
    roll = evaluate(state.params, env, DISC_PARAMS, jax.random.key(1), L, True)
    assert roll.dones[-1].all() and not roll.dones[:-1].any()
    np.testing.assert_array_equal(roll.actions.T, np.tile(DISC_PARAMS["best"], (8, 1)))
    np.testing.assert_array_equal(roll.rewards[-1], 1.0)
    np.testing.assert_array_equal(roll.info["arch"][-1], roll.actions.T)
    # The top-1 tracker saw a perfect architecture and agrees with the metrics.
    assert float(state.track["score"]) == pytest.approx(np.max(m["episode_return_max"]))
    np.testing.assert_array_equal(state.track["arch"], DISC_PARAMS["best"])


def test_learns_continuous_edge_bandit():
    # Box action in [-1, 1]; lr raised to 3e-3 so that log_std (init 0) can shrink
    # within 40 updates (Adam moves each parameter by about lr per step).
    # 8 envs x 31 steps = 248 transitions = 3 minibatches of 64 + a last one of 56,
    # so this run also exercises SB3's partial last minibatch.
    env = EdgeBandit(num_envs=8, continuous=True)
    config = PPOConfig(n_steps=31, learning_rate=3e-3)
    state, m = run(config, env, CONT_PARAMS, 0, [40])
    # Initial policy N(0, 1): E|a - target| is about 0.7, so the return starts ~0.3.
    assert m["episode_return_mean"][0] < 0.5
    assert m["episode_return_mean"][-1] >= 0.9, m["episode_return_mean"]
    assert m["std"][-1] < 0.2 and m["std"][0] < 1.0
    roll = evaluate(state.params, env, CONT_PARAMS, jax.random.key(1), L, True)
    # Deterministic (mean) actions are within 0.1 of the targets.
    np.testing.assert_allclose(roll.actions[:, 0, 0], CONT_PARAMS["target"], atol=0.1)


# 3 envs x 8 steps = 24 transitions per update, 3 minibatches of 8, 2 epochs.
SMALL = PPOConfig(n_steps=8, batch_size=8, n_epochs=2)
SMALL_ENV = EdgeBandit(num_envs=3)


def test_rollout_layout_and_minibatch_schedule():
    init, _ = trainer(SMALL, SMALL_ENV, True)
    state = init(jax.random.key(0), DISC_PARAMS, TRACK_INIT)
    state, traj = ppo_train.collect_rollout(
        SMALL_ENV, SMALL.n_steps, state, DISC_PARAMS, jax.random.key(1)
    )
    assert traj.obs.shape == (8, 3, L) and traj.dones.shape == (8, 3)
    assert int(state.num_timesteps) == 24
    # Episodes of L = 4 steps end at steps 3 and 7 in every env.
    np.testing.assert_array_equal(
        traj.dones, np.tile(np.arange(8)[:, None] % 4 == 3, 3)
    )
    np.testing.assert_allclose(traj.episode_lengths[3], 4)
    # episode_starts is the previous step's done (SB3's _last_episode_starts),
    # initially all True.
    np.testing.assert_array_equal(traj.episode_starts[0], True)
    np.testing.assert_array_equal(traj.episode_starts[1:], traj.dones[:-1])
    adv = jnp.zeros((8, 3))
    batch = ppo_train.flatten_rollout(traj, adv, adv)
    # SB3's swap_and_flatten: flat index = env * T + t.
    np.testing.assert_array_equal(batch.obs[8 * 2 + 5], traj.obs[5, 2])
    # Minibatch schedule over the 24 transitions: [n_epochs, number of minibatches].
    # batch 8 -> 3 full; batch 7 -> 3 full + 1 of 3; batch 23 -> 1 full + 1 of 1
    # (SB3 yields the partial last chunk too; a chunk of 1 is not normalised).
    for batch_size, n_minibatches in [(8, 3), (7, 4), (23, 2)]:
        config = dataclasses.replace(SMALL, batch_size=batch_size)
        tx = ppo_train.make_optimizer(config)
        epochs = functools.partial(ppo_train.train_epochs, config, tx)
        _, _, metrics = jax.eval_shape(
            epochs, state.params, state.opt_state, batch, jax.random.key(2)
        )
        assert metrics["policy_loss"].shape == (2, n_minibatches)


def test_episode_metrics_nan_when_no_episode_ended():
    dones = jnp.array([[False, False], [False, True]])
    rets = jnp.array([[0.0, 0.0], [9.0, 0.5]])
    traj = ppo_train.Transition(
        *([None] * 6),
        dones=dones,
        episode_returns=rets,
        episode_lengths=jnp.full((2, 2), 4),
        info=None,
    )
    m = ppo_train.episode_metrics(traj)
    # Only env 1 finished (at step 1), with return 0.5; the 9.0 is ignored.
    assert int(m["num_episodes"]) == 1
    assert float(m["episode_return_mean"]) == float(m["episode_return_max"]) == 0.5
    m = ppo_train.episode_metrics(traj._replace(dones=jnp.zeros_like(dones)))
    assert int(m["num_episodes"]) == 0
    assert np.isnan(m["episode_return_mean"]) and np.isnan(m["episode_return_min"])
    assert np.isnan(m["episode_return_max"]) and np.isnan(m["episode_length_mean"])


def test_same_seed_bit_identical_and_chunks_resume_exactly():
    state_a, m_a = run(SMALL, SMALL_ENV, DISC_PARAMS, 7, [2], track=True)
    state_b, m_b = run(SMALL, SMALL_ENV, DISC_PARAMS, 7, [2], track=True)
    assert_trees_equal(state_a, state_b)
    assert_trees_equal(m_a, m_b)
    # Two chunks of 1 update == one chunk of 2 (a resumed run is identical).
    state_c, m_c = run(SMALL, SMALL_ENV, DISC_PARAMS, 7, [1, 1], track=True)
    assert_trees_equal(state_a, state_c)
    assert_trees_equal(m_a, m_c)
    assert int(state_a.num_updates) == 2 and int(state_a.num_timesteps) == 48
    # A different seed gives a different run.
    state_d, _ = run(SMALL, SMALL_ENV, DISC_PARAMS, 8, [2], track=True)
    assert not np.array_equal(
        state_a.params["params"]["action_net"]["kernel"],
        state_d.params["params"]["action_net"]["kernel"],
    )


def test_vmap_over_seeds_matches_separate_runs():
    # Each seed gets its own env params (like its own supernet): stack on axis 0.
    params_1 = {"best": jnp.array([2, 2, 0, 1])}
    seeds = [(7, DISC_PARAMS), (8, params_1)]
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), DISC_PARAMS, params_1)
    init_seeds, chunk_seeds = make_train_seeds(SMALL, SMALL_ENV, best_track_fn)
    keys = jnp.stack([jax.random.key(7), jax.random.key(8)])
    states = jax.jit(init_seeds)(keys, stacked, TRACK_INIT)
    chunk = jax.jit(chunk_seeds, static_argnums=2, donate_argnums=0)
    states, metrics = chunk(states, stacked, 2)
    assert metrics["policy_loss"].shape == (2, 2)
    for i, (seed, env_params) in enumerate(seeds):
        state, m = run(SMALL, SMALL_ENV, env_params, seed, [2], track=True)
        mine = jax.tree.map(lambda x, i=i: x[i], (states.params, states.track, metrics))
        # Batched matmuls may round differently from unbatched ones: compare closely
        # rather than bitwise (the sampled actions agree, so the runs coincide).
        jax.tree.map(
            functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
            mine,
            (state.params, state.track, m),
        )
        np.testing.assert_array_equal(mine[2]["num_episodes"], m["num_episodes"])


def test_rejects_unknown_action_kind():
    bad = SimpleNamespace(action_kind="multi", num_envs=1, obs_shape=(1,), action_dim=1)
    with pytest.raises(ValueError, match="action_kind"):
        make_train(PPOConfig(), bad)


# ------------------------------------------------ update vs an independent reference
def _ref_forward(p, x):
    """Hand-written SB3 actor-critic forward: (head, value)."""
    q = p["params"]
    pi, vf = x, x
    for i in range(len(q["policy_net"])):
        layer_p, layer_v = q["policy_net"][f"dense_{i}"], q["value_net"][f"dense_{i}"]
        pi = jnp.tanh(pi @ layer_p["kernel"] + layer_p["bias"])
        vf = jnp.tanh(vf @ layer_v["kernel"] + layer_v["bias"])
    head = pi @ q["action_net"]["kernel"] + q["action_net"]["bias"]
    value = (vf @ q["value_head"]["kernel"] + q["value_head"]["bias"])[:, 0]
    return head, value


def _ref_loss(p, mb, cfg):
    head, value = _ref_forward(p, mb["obs"])
    if "log_std" in p["params"]:
        log_std = p["params"]["log_std"]
        z = (mb["actions"] - head) / jnp.exp(log_std)
        d = head.shape[-1]
        log_prob = -0.5 * (z**2).sum(-1) - log_std.sum() - 0.5 * d * np.log(2 * np.pi)
        entropy = jnp.full(
            value.shape, log_std.sum() + 0.5 * d * (1 + np.log(2 * np.pi))
        )
    else:
        logp = jax.nn.log_softmax(head)
        log_prob = jnp.take_along_axis(logp, mb["actions"][:, None], 1)[:, 0]
        entropy = -(jnp.exp(logp) * logp).sum(-1)
    adv = mb["advantages"]
    if adv.shape[0] > 1:
        adv = (adv - adv.mean()) / (jnp.std(adv, ddof=1) + 1e-8)
    ratio = jnp.exp(log_prob - mb["log_probs"])
    surrogate = jnp.minimum(
        adv * ratio, adv * jnp.clip(ratio, 1 - cfg.clip_range, 1 + cfg.clip_range)
    )
    return (
        -surrogate.mean()
        - cfg.ent_coef * entropy.mean()
        + cfg.vf_coef * ((mb["returns"] - value) ** 2).mean()
    )


def _reference_update(cfg, params, batch, key):
    """SB3's PPO.train as a plain Python loop, Adam and norm clip in float64 NumPy."""
    n = batch.advantages.shape[0]
    grad_fn = jax.jit(jax.grad(_ref_loss), static_argnums=2)
    leaves, treedef = jax.tree.flatten(params)
    p = [np.asarray(x, np.float64) for x in leaves]
    mu = [np.zeros_like(x) for x in p]
    nu = [np.zeros_like(x) for x in p]
    t = 0
    for epoch_key in jax.random.split(key, cfg.n_epochs):
        perm = np.asarray(jax.random.permutation(epoch_key, n))
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            mb = {k: np.asarray(v)[idx] for k, v in batch._asdict().items()}
            cur = jax.tree.unflatten(treedef, [jnp.asarray(x, jnp.float32) for x in p])
            g = [
                np.asarray(x, np.float64)
                for x in jax.tree.leaves(grad_fn(cur, mb, cfg))
            ]
            norm = np.sqrt(sum((x**2).sum() for x in g))
            g = [x * min(1.0, cfg.max_grad_norm / norm) for x in g]
            t += 1
            for i, gi in enumerate(g):
                mu[i] = 0.9 * mu[i] + 0.1 * gi
                nu[i] = 0.999 * nu[i] + 0.001 * gi**2
                m_hat, v_hat = mu[i] / (1 - 0.9**t), nu[i] / (1 - 0.999**t)
                p[i] = p[i] - cfg.learning_rate * m_hat / (
                    np.sqrt(v_hat) + cfg.adam_eps
                )
    return jax.tree.unflatten(treedef, p)


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_train_epochs_matches_independent_reference(kind):
    # 200 transitions in minibatches of 64: 3 full and a last one of 8, 2 epochs.
    cfg = PPOConfig(n_epochs=2, batch_size=64, ent_coef=0.01, learning_rate=1e-3)
    n, d, a = 200, 12, 5
    params = init_agent(jax.random.key(0), (d,), kind, a)
    k = jax.random.split(jax.random.key(1), 6)
    if kind == "discrete":
        actions = jax.random.randint(k[1], (n,), 0, a)
    else:
        actions = 0.5 * jax.random.normal(k[1], (n, a))
    head, value = _ref_forward(params, jax.random.normal(k[0], (n, d)))
    batch = PPOBatch(
        obs=jax.random.normal(k[0], (n, d)),
        actions=actions,
        log_probs=-1.5 + 0.2 * jax.random.normal(k[2], (n,)),
        values=value,
        advantages=jax.random.normal(k[4], (n,)),
        returns=value + jax.random.normal(k[5], (n,)),
    )
    tx = ppo_train.make_optimizer(cfg)
    new, _, metrics = jax.jit(functools.partial(ppo_train.train_epochs, cfg, tx))(
        params, tx.init(params), batch, jax.random.key(3)
    )
    assert metrics["loss"].shape == (2, 4)
    ref = _reference_update(cfg, params, batch, jax.random.key(3))
    moved = max(
        float(np.abs(np.asarray(x) - np.asarray(y)).max())
        for x, y in zip(jax.tree.leaves(ref), jax.tree.leaves(params), strict=True)
    )
    assert moved > 1e-3  # the update really changed the parameters
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), y, atol=1e-5, rtol=0),
        new,
        ref,
    )
