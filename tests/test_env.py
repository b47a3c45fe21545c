"""Environment invariants (reference.md §2) on a tiny supernet and the digits data."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import env as E
from jaxdarts.data import load_dataset, split_indices
from jaxdarts.rewards import RewardConfig
from jaxdarts.supernet import SupernetConfig

NET = SupernetConfig(channels=4, layers=1, num_classes=10)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    tr, va = split_indices(len(ds.train_images), 0)
    return ds, tr, va


def _params(cfg, digits):
    ds, tr, va = digits
    v = cfg.supernet.init(jax.random.key(0), ds.image_shape)
    return E.make_params(
        cfg,
        v,
        ds.train_images[va],
        ds.train_labels[va],
        ds.mean,
        ds.std,
        ds.train_images[tr],
        ds.train_labels[tr],
    )


@pytest.fixture(scope="module")
def disc(digits):
    cfg = E.EnvConfig(
        kind="discrete", net=NET, reward=RewardConfig("nwot"), batch_size=16, crop_pad=1
    )
    return cfg, _params(cfg, digits)


def test_shapes_and_spaces():
    d = E.EnvConfig(kind="discrete")
    assert d.obs_shape == (224,) and d.episode_length == 28
    assert E.action_space(d) == {"kind": "discrete", "n": 8}
    c = E.EnvConfig(kind="continuous", reward=RewardConfig("acc"))
    assert c.obs_shape == (10, 224) and c.episode_length == 280
    g = dataclasses.replace(c, grad_obs=True, weight_step=True)
    assert g.obs_shape == (10, 448)
    assert E.action_space(g)["shape"] == (8,)
    s3 = E.EnvConfig(net=SupernetConfig(space="s3"))
    assert s3.obs_shape == (84,)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="nwot"):
        E.EnvConfig(kind="continuous", reward=RewardConfig("nwot"))
    with pytest.raises(ValueError, match="continuous env only"):
        E.EnvConfig(kind="discrete", grad_obs=True)
    with pytest.raises(ValueError, match="kind"):
        E.EnvConfig(kind="bandit")


def test_discrete_episode_visits_every_edge_in_order(disc):
    cfg, params = disc
    step = jax.jit(E.step)
    obs, state = E.reset(jax.random.key(1), params)
    k = cfg.num_ops
    assert obs.shape == (224,)
    # Reset obs is near-uniform: every probability within 1e-2 of 1/K.
    np.testing.assert_allclose(np.asarray(obs), 1.0 / k, atol=1e-2)
    actions = np.arange(28) % k
    for t in range(28):
        obs, state, r, term, trunc, info = step(
            jax.random.key(t), state, actions[t], params
        )
        if t < 27:
            assert float(r) == 0.0 and not bool(term)
            probs = np.asarray(obs).reshape(2, 14, k)
            cell, edge = divmod(t, 14)
            # Assigned edges are exactly one-hot on their action.
            for tt in range(t + 1):
                c, e = divmod(tt, 14)
                expect = np.zeros(k)
                expect[actions[tt]] = 1.0
                np.testing.assert_array_equal(probs[c, e], expect)
            # Unassigned edges stay near-uniform.
            if t + 1 < 28:
                c, e = divmod(t + 1, 14)
                assert np.abs(probs[c, e] - 1.0 / k).max() < 1e-2
        else:
            assert bool(term) and not bool(trunc)
            final = np.asarray(info["final_obs"]).reshape(2, 14, k)
            assert np.all(final.max(-1) == 1.0)
            np.testing.assert_array_equal(final.argmax(-1).reshape(-1), actions)
            assert float(r) > 0 and np.isfinite(float(r))
            # Auto-reset: fresh alphas, t = 0, one episode done.
            assert int(state.t) == 0 and int(state.episodes) == 1
            np.testing.assert_allclose(np.asarray(obs), 1.0 / k, atol=1e-2)


def test_reset_redraws_alphas(disc):
    _, params = disc
    _, s1 = E.reset(jax.random.key(1), params)
    _, s2 = E.reset(jax.random.key(2), params)
    assert not np.allclose(s1.alpha_normal, s2.alpha_normal)
    # Scale 1e-3 * N(0, 1).
    assert 1e-4 < float(jnp.std(s1.alpha_normal)) < 1e-2


def test_lockstep_equals_single_envs(disc):
    cfg, params = disc
    n = 3
    venv = E.LockstepEnv(cfg, n)
    obs, states = jax.jit(venv.reset)(jax.random.key(5), params)
    assert obs.shape == (n, 224)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, cfg.num_ops, (28, n))
    vstep = jax.jit(venv.step)
    for t in range(28):
        obs, states, r, done, info = vstep(
            jax.random.key(100 + t), states, jnp.asarray(acts[t]), params
        )
    assert bool(done.all())
    alphas = np.asarray(info["final_alphas"])  # [n, 2, 14, K]
    np.testing.assert_array_equal(alphas.argmax(-1).reshape(n, 28), acts.T)
    # Each env's reward equals scoring its architecture alone on its own batch.
    from jaxdarts.env import _batch
    from jaxdarts.rewards import score_one

    net = cfg.supernet
    k_reward = jax.random.split(jax.random.key(100 + 27), 3)[1]
    keys = jax.random.split(k_reward, n)
    for i in range(n):
        x, y = _batch(
            jax.random.split(keys[i])[0],
            params.valid_images,
            params.valid_labels,
            i,
            params,
            True,
        )
        cn, cr = net.choices(jnp.asarray(alphas[i, 0]), jnp.asarray(alphas[i, 1]))
        ri, _ = score_one(net, params.variables, cn, cr, x, y, cfg.reward)
        np.testing.assert_allclose(float(r[i]), float(ri), rtol=1e-6)
    # Envs start on different validation batches and all advanced by one.
    np.testing.assert_array_equal(np.asarray(states.valid_pos), np.arange(n) + 1)


@pytest.fixture(scope="module")
def cont(digits):
    cfg = E.EnvConfig(
        kind="continuous",
        net=NET,
        reward=RewardConfig("acc"),
        batch_size=16,
        crop_pad=1,
        sweeps=2,
        frame_stack=3,
        grad_obs=True,
        weight_step=True,
        weight_step_period=2,
    )
    return cfg, _params(cfg, digits)


def test_continuous_env(cont):
    cfg, params = cont
    n = 2
    venv = E.LockstepEnv(cfg, n)
    obs, st = jax.jit(venv.reset)(jax.random.key(0), params)
    assert obs.shape == (n, 3, 2 * 2 * 14 * 8)
    # Reset fills every frame with the reset obs; the gradient part is zero.
    np.testing.assert_array_equal(obs[:, 0], obs[:, 2])
    frame = np.asarray(obs[0, 0]).reshape(4, 14, 8)
    assert np.all(frame[1] == 0) and np.all(frame[3] == 0)
    w0 = st.variables
    a0 = np.asarray(st.alpha_normal)
    step = jax.jit(venv.step)
    action = jnp.ones((n, 8)) * 2.0  # clipped to 1 -> alpha += 0.01
    obs, st1, r, done, _ = step(jax.random.key(1), st, action, params)
    d = np.asarray(st1.alpha_normal) - a0
    np.testing.assert_allclose(d[:, 0], 0.01, atol=1e-6)  # edge 0 of the normal cell
    np.testing.assert_array_equal(d[:, 1:], 0.0)
    # The gradient part is filled (layers=1: the only cell is a reduction cell).
    assert not np.allclose(np.asarray(obs[0, -1]).reshape(4, 14, 8)[3], 0.0)
    np.testing.assert_array_equal(obs[:, 0], obs[:, 1])  # older frames shift in
    # The weight step happens after sweep `period` (= 2) only: 56 steps.
    for t in range(1, 55):
        obs, st1, r, done, _ = step(jax.random.key(1 + t), st1, action, params)
        same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), w0, st1.variables)
        assert all(jax.tree.leaves(same)), f"weights changed at step {t + 1}"
        assert float(r.sum()) == 0.0 and not bool(done.any())
    obs, st1, r, done, _ = step(jax.random.key(99), st1, action, params)
    assert bool(done.all())
    changed = jax.tree.map(
        lambda a, b: not bool(jnp.array_equal(a, b)),
        w0["params"],
        st1.variables["params"],
    )
    assert any(jax.tree.leaves(changed))
    assert np.all((np.asarray(r) >= 0) & (np.asarray(r) <= 1))  # accuracy reward
    # Weights carry over the reset; alphas are re-drawn.
    assert int(st1.t[0]) == 0 and np.abs(np.asarray(st1.alpha_normal)).max() < 0.01
