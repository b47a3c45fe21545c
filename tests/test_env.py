"""Environment invariants on a tiny supernet and the digits data.

The contract: ``reset(key, params) -> (obs, state)`` and ``step(key, state, action,
params) -> (obs, state, reward, terminated, truncated, info)``; ``LockstepEnv`` is the
vmap of the same functions. Every comparison below is against an independent
computation (single unbatched envs, a reward scored by hand).
"""

import dataclasses
import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import env as E
from jaxdarts.data import load_dataset, split_indices
from jaxdarts.rewards import INVALID_REWARD, RewardConfig, score_one
from jaxdarts.supernet import SupernetConfig

# XLA's own ops: quicker compiles than the CPU default's (the two are tested equal
# in test_speed_equivalence.py; the search tests run the default).
NET = SupernetConfig(channels=4, layers=1, num_classes=10, impl="xla")


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    tr, va = split_indices(len(ds.train_images), 0)
    return ds, tr, va


def _params(cfg, digits, valid=None):
    ds, tr, va = digits
    va = va if valid is None else va[:valid]
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


def _nan_params(params):
    return params.replace(
        variables=jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params.variables)
    )


@pytest.fixture(scope="module")
def disc(digits):
    cfg = E.EnvConfig(
        kind="discrete", net=NET, reward=RewardConfig("nwot"), batch_size=16, crop_pad=1
    )
    return cfg, _params(cfg, digits)


@pytest.fixture(scope="module")
def cont(digits):
    # One sweep per episode, a weight step at the end of every sweep: 28-step
    # episodes that exercise the grad observation and the weight step. Search space
    # s2 (skip_connect, sep_conv_3x3): small programs, quick compiles.
    cfg = E.EnvConfig(
        kind="continuous",
        net=dataclasses.replace(NET, space="s2"),
        reward=RewardConfig("acc"),
        batch_size=16,
        crop_pad=1,
        sweeps=1,
        frame_stack=3,
        grad_obs=True,
        weight_step=True,
        weight_step_period=1,
    )
    return cfg, _params(cfg, digits)


@functools.cache
def _jit_step():
    return jax.jit(E.step)


@functools.cache
def _jit_vmapped_step():
    return jax.jit(jax.vmap(E.step, in_axes=(0, 0, 0, None)))


def test_shapes():
    d = E.EnvConfig(kind="discrete")
    assert d.obs_shape == (224,) and d.episode_length == 28 and d.num_ops == 8
    c = E.EnvConfig(kind="continuous", reward=RewardConfig("acc"))
    assert c.obs_shape == (10, 224) and c.episode_length == 280
    g = dataclasses.replace(c, grad_obs=True, weight_step=True)
    assert g.obs_shape == (10, 448)
    venv = E.LockstepEnv(g, 4)
    assert (venv.obs_shape, venv.action_kind, venv.action_dim) == (
        (10, 448),
        "continuous",
        8,
    )
    s3 = E.EnvConfig(net=SupernetConfig(space="s3"))
    assert s3.obs_shape == (84,)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="nwot"):
        E.EnvConfig(kind="continuous", reward=RewardConfig("nwot"))
    with pytest.raises(ValueError, match="continuous env only"):
        E.EnvConfig(kind="discrete", grad_obs=True)
    with pytest.raises(ValueError, match="kind"):
        E.EnvConfig(kind="bandit")
    with pytest.raises(ValueError, match="nwot_flavour"):
        E.EnvConfig(nwot_flavour="mellor")
    with pytest.raises(ValueError, match="for the nwot reward"):
        E.EnvConfig(reward=RewardConfig("acc"), nwot_flavour="original")
    # An invalid reward must lie below every valid reward of its kind.
    for kind, bad in (("nwot", 0.0), ("acc", 0.0), ("loss", -50.0)):
        with pytest.raises(ValueError, match="not below every valid"):
            RewardConfig(kind, invalid_reward=bad)
    assert RewardConfig("loss", invalid_reward=-1e4).invalid_reward == -1e4
    for kind in ("nwot", "acc", "loss"):
        assert RewardConfig(kind).invalid_reward == INVALID_REWARD[kind]


def test_discrete_episode_visits_every_edge_in_order(disc):
    cfg, params = disc
    step = _jit_step()
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
        assert not bool(trunc)
        if t < 27:
            assert float(r) == 0.0 and not bool(term)
            probs = np.asarray(obs).reshape(2, 14, k)
            # Assigned edges are exactly one-hot on their action.
            for tt in range(t + 1):
                c, e = divmod(tt, 14)
                expect = np.zeros(k)
                expect[actions[tt]] = 1.0
                np.testing.assert_array_equal(probs[c, e], expect)
            # The next edge is still near-uniform.
            c, e = divmod(t + 1, 14)
            assert np.abs(probs[c, e] - 1.0 / k).max() < 1e-2
        else:
            assert bool(term)
            final = np.asarray(info["final_obs"]).reshape(2, 14, k)
            assert np.all(final.max(-1) == 1.0)
            np.testing.assert_array_equal(final.argmax(-1).reshape(-1), actions)
            assert float(r) > 0 and np.isfinite(float(r)) and bool(info["valid"])
            # Auto-reset: fresh alphas, t = 0, one episode done.
            assert int(state.t) == 0 and int(state.episodes) == 1
            np.testing.assert_allclose(np.asarray(obs), 1.0 / k, atol=1e-2)


def test_reset_redraws_alphas_and_validation_start(disc):
    cfg, params = disc
    _, s1 = E.reset(jax.random.key(1), params)
    _, s2 = E.reset(jax.random.key(2), params)
    assert not np.allclose(s1.alpha_normal, s2.alpha_normal)
    # Scale 1e-3 * N(0, 1).
    assert 1e-4 < float(jnp.std(s1.alpha_normal)) < 1e-2
    # Each env's first validation batch comes from its reset key, spread over all.
    nb = params.valid_images.shape[0] // cfg.batch_size
    _, many = jax.vmap(E.reset, (0, None))(
        jax.random.split(jax.random.key(0), 64), params
    )
    pos = np.asarray(many.valid_pos)
    assert pos.min() >= 0 and pos.max() < nb and len(np.unique(pos)) > 32


def _three_forms(cfg, params, actions, key, n, by_hand_vmap=True):
    """Trajectories of the lockstep env, ``vmap(step)`` and n unbatched envs.

    ``LockstepEnv.step`` is ``vmap(step)`` after a key split; ``by_hand_vmap=False``
    skips re-checking that (one compile less).
    """
    steps = len(actions)
    step_keys = [jax.random.key(100 + t) for t in range(steps)]
    out = {}
    venv = E.LockstepEnv(cfg, n)
    obs, st = jax.jit(venv.reset)(key, params)
    lstep = jax.jit(venv.step)
    traj = []
    for t in range(steps):
        obs, st, r, term, trunc, info = lstep(step_keys[t], st, actions[t], params)
        traj.append((obs, r, term, trunc, info["raw_reward"], info["valid"]))
    out["lockstep"] = traj
    if by_hand_vmap:  # vmap(step) by hand, with the same key split as LockstepEnv.
        obs, st = jax.vmap(E.reset, (0, None))(jax.random.split(key, n), params)
        vstep = _jit_vmapped_step()
        traj = []
        for t in range(steps):
            keys = jax.random.split(step_keys[t], n)
            obs, st, r, term, trunc, info = vstep(keys, st, actions[t], params)
            traj.append((obs, r, term, trunc, info["raw_reward"], info["valid"]))
        out["vmap"] = traj
    # n single envs, no vmap at all (plain lax.cond).
    step = _jit_step()
    per_env = []
    for i in range(n):
        o, s = E.reset(jax.random.split(key, n)[i], params)
        traj = []
        for t in range(steps):
            k = jax.random.split(step_keys[t], n)[i]
            o, s, r, term, trunc, info = step(k, s, actions[t][i], params)
            traj.append((o, r, term, trunc, info["raw_reward"], info["valid"]))
        per_env.append(traj)
    out["single"] = [
        tuple(np.stack([per_env[i][t][j] for i in range(n)]) for j in range(6))
        for t in range(steps)
    ]
    return out, st


def _assert_same_trajectories(out):
    names = ("obs", "reward", "terminated", "truncated", "raw_reward", "valid")
    for form in [f for f in ("vmap", "single") if f in out]:
        for t, (a, b) in enumerate(zip(out["lockstep"], out[form], strict=True)):
            for name, x, y in zip(names, a, b, strict=True):
                x, y = np.asarray(x), np.asarray(y)
                if x.dtype == bool:
                    np.testing.assert_array_equal(x, y, err_msg=f"{form} {name} {t}")
                else:
                    np.testing.assert_allclose(
                        x, y, rtol=1e-5, atol=1e-6, err_msg=f"{form} {name} {t}"
                    )


@pytest.mark.parametrize("n", [1, 3])
def test_discrete_vmap_lockstep_and_single_envs_agree(disc, n):
    """n = 1 takes the rule's batch-of-one path (no batching pass)."""
    cfg, params = disc
    acts = np.random.default_rng(0).integers(0, cfg.num_ops, (29, n))
    out, _ = _three_forms(cfg, params, jnp.asarray(acts), jax.random.key(5), n)
    _assert_same_trajectories(out)
    terms = np.stack([np.asarray(x[2]) for x in out["lockstep"]])
    assert terms[27].all() and not terms[:27].any() and not terms[28].any()
    rewards = np.stack([np.asarray(x[1]) for x in out["lockstep"]])
    assert (rewards[27] > 0).all() and (rewards[:27] == 0).all()
    assert len(np.unique(rewards[27])) == n  # different cells / batches


def test_lockstep_reward_equals_scoring_by_hand(disc):
    cfg, params = disc
    n = 2
    venv = E.LockstepEnv(cfg, n)
    _, st0 = venv.reset(jax.random.key(5), params)
    acts = np.random.default_rng(1).integers(0, cfg.num_ops, (28, n))
    st = st0
    lstep = jax.jit(venv.step)
    for t in range(28):
        _, st, r, term, _, info = lstep(
            jax.random.key(100 + t), st, jnp.asarray(acts[t]), params
        )
    assert bool(term.all())
    alphas = np.asarray(info["final_alphas"])  # [n, 2, 14, K]
    np.testing.assert_array_equal(alphas.argmax(-1).reshape(n, 28), acts.T)
    net = cfg.supernet
    env_keys = jax.random.split(jax.random.key(100 + 27), n)
    for i in range(n):
        k_end = jax.random.split(env_keys[i])[1]
        k_reward = jax.random.split(k_end)[0]
        x, y = E._batch(
            jax.random.split(k_reward)[0],
            params.valid_images,
            params.valid_labels,
            st0.valid_pos[i],
            params,
            True,
        )
        cn, cr = net.choices(jnp.asarray(alphas[i, 0]), jnp.asarray(alphas[i, 1]))
        ri, _ = score_one(net, params.variables, cn, cr, x, y, cfg.reward)
        np.testing.assert_allclose(float(r[i]), float(ri), rtol=1e-6)
    np.testing.assert_array_equal(st.valid_pos, st0.valid_pos + 1)


@pytest.mark.slow
def test_continuous_vmap_lockstep_and_single_envs_agree(cont):
    cfg, params = cont
    n = 2
    acts = np.random.default_rng(0).uniform(-2, 2, (29, n, cfg.num_ops))
    out, st = _three_forms(
        cfg, params, jnp.asarray(acts, jnp.float32), jax.random.key(3), n, False
    )
    _assert_same_trajectories(out)
    terms = np.stack([np.asarray(x[2]) for x in out["lockstep"]])
    assert terms[27].all() and not terms[:27].any()
    r = np.asarray(out["lockstep"][27][1])
    assert np.all((r >= 0) & (r <= 1))  # accuracy reward
    # The weight step ran at the end of the sweep: the weights drifted, per env.
    w0 = params.variables["params"]
    moved = jax.tree.map(
        lambda a, b: bool((np.asarray(a) != np.asarray(b)[None]).any()),
        st.variables["params"],
        w0,
    )
    assert any(jax.tree.leaves(moved))


def test_continuous_steps_frames_and_weight_step_timing(cont):
    cfg, params = cont
    k = cfg.num_ops
    step = _jit_step()
    obs, st = E.reset(jax.random.key(0), params)
    assert obs.shape == (3, 2 * 2 * 14 * k)
    # Reset fills every frame with the reset obs; the gradient part is zero.
    np.testing.assert_array_equal(obs[0], obs[2])
    frame = np.asarray(obs[0]).reshape(4, 14, k)
    assert np.all(frame[1] == 0) and np.all(frame[3] == 0)
    w0, a0 = st.variables, np.asarray(st.alpha_normal)
    action = jnp.ones((k,)) * 2.0  # clipped to 1 -> alpha += 0.01
    obs, st1, r, term, _, _ = step(jax.random.key(1), st, action, params)
    d = np.asarray(st1.alpha_normal) - a0
    np.testing.assert_allclose(d[0], 0.01, atol=1e-6)  # edge 0 of the normal cell
    np.testing.assert_array_equal(d[1:], 0.0)
    # The gradient part is filled (layers=1: the only cell is a reduction cell).
    assert not np.allclose(np.asarray(obs[-1]).reshape(4, 14, k)[3], 0.0)
    np.testing.assert_array_equal(obs[0], obs[1])  # older frames shift in
    for t in range(1, 27):
        obs, st1, r, term, _, _ = step(jax.random.key(1 + t), st1, action, params)
        same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), w0, st1.variables)
        assert all(jax.tree.leaves(same)), f"weights changed at step {t + 1}"
        assert float(r) == 0.0 and not bool(term)
    obs, st1, r, term, _, _ = step(jax.random.key(99), st1, action, params)
    assert bool(term) and 0 <= float(r) <= 1
    changed = jax.tree.map(
        lambda a, b: not bool(jnp.array_equal(a, b)),
        w0["params"],
        st1.variables["params"],
    )
    assert any(jax.tree.leaves(changed))
    # Weights carry over the reset; alphas are re-drawn.
    assert int(st1.t) == 0 and np.abs(np.asarray(st1.alpha_normal)).max() < 0.01


# ------------------------------------------------------------ lockstep_cond
def _counting_branches():
    calls = {"true": 0, "false": 0}

    def true_fn(op):
        calls["true"] += 1
        x, y = op
        return 2.0 * x + y, jnp.sum(x)

    def false_fn(op):
        calls["false"] += 1
        x, y = op
        return x - y, -jnp.sum(x)

    return calls, true_fn, false_fn


@pytest.mark.parametrize("n", [1, 3])
def test_lockstep_cond_traces_each_branch_once_and_matches_numpy(n):
    """Under vmap each branch's Python function runs once per trace (the unbatched
    trace is reused by the vmap rule) and every element gets its own branch."""
    calls, true_fn, false_fn = _counting_branches()

    def f(pred, x, y):
        return E.lockstep_cond(pred, true_fn, false_fn, (x, y))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.float32(0.5)  # unbatched operand leaf
    vf = jax.jit(jax.vmap(f, (0, 0, None)))
    for pred in ([True] * n, [False] * n, [i % 2 == 0 for i in range(n)]):
        out, total = vf(jnp.asarray(pred), x, y)
        p = np.asarray(pred)[:, None]
        np.testing.assert_allclose(out, np.where(p, 2.0 * x + y, x - y), rtol=1e-6)
        np.testing.assert_allclose(
            total, np.where(p[:, 0], x.sum(1), -x.sum(1)), rtol=1e-6
        )
    assert calls == {"true": 1, "false": 1}  # one compile, each branch traced once


def test_lockstep_cond_nested_vmaps_and_plain_call_match_numpy():
    _, true_fn, false_fn = _counting_branches()

    def f(pred, x):
        return E.lockstep_cond(pred, true_fn, false_fn, (x, jnp.float32(1.0)))

    x = np.random.default_rng(1).normal(size=(2, 1, 3)).astype(np.float32)
    pred = np.array([[True], [False]])
    out, total = jax.jit(jax.vmap(jax.vmap(f)))(jnp.asarray(pred), x)
    np.testing.assert_allclose(out, np.where(pred[..., None], 2 * x + 1, x - 1))
    np.testing.assert_allclose(total, np.where(pred, x.sum(-1), -x.sum(-1)))
    out, total = f(jnp.asarray(False), x[0, 0])  # no vmap: a plain cond
    np.testing.assert_allclose(out, x[0, 0] - 1)
    np.testing.assert_allclose(total, -x[0, 0].sum(), rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2])
def test_vmapped_step_traces_the_reward_once(disc, monkeypatch, n):
    """The unbatched episode end and the rule's batched one share one trace of the
    reward (the supernet's forward pass), and a batch of one needs no other."""
    cfg, params = disc
    traces = []
    original = E.episode_reward

    def counted(key, state, params):
        traces.append(1)
        return original(key, state, params)

    monkeypatch.setattr(E, "episode_reward", counted)
    keys = jax.random.split(jax.random.key(0), n)
    _, st = jax.vmap(E.reset, (0, None))(keys, params)
    jax.make_jaxpr(jax.vmap(E.step, (0, 0, 0, None)))(
        keys, st, jnp.zeros((n,), jnp.int32), params
    )
    assert len(traces) == 1


# ------------------------------------------------------------ supernet passes
def _sub_jaxprs(params):
    for value in params.values():
        for x in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(x, jax.extend.core.ClosedJaxpr):
                yield x.jaxpr
            elif isinstance(x, jax.extend.core.Jaxpr):
                yield x


def _top_level_prims(jaxpr, out, inside_cond=False):
    """Counts primitives by name, split by whether they sit inside a cond branch."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        out.setdefault((name, inside_cond), 0)
        out[(name, inside_cond)] += 1
        for sub in _sub_jaxprs(eqn.params):
            _top_level_prims(sub, out, inside_cond or name == "cond")
    return out


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_vmapped_step_runs_no_supernet_outside_a_branch(disc, cont, kind):
    """Under vmap the supernet (its convolutions) only appears inside cond branches."""
    if kind == "discrete":
        cfg, params = disc
        action = jnp.zeros((3,), jnp.int32)
    else:  # no grad obs (that forward runs every step by design); weight step on
        cfg = dataclasses.replace(cont[0], grad_obs=False)
        params = cont[1].replace(config=cfg)
        action = jnp.zeros((3, cfg.num_ops))
    keys = jax.random.split(jax.random.key(0), 3)
    _, st = jax.vmap(E.reset, (0, None))(keys, params)
    jaxpr = jax.make_jaxpr(jax.vmap(E.step, (0, 0, 0, None)))(keys, st, action, params)
    counts = _top_level_prims(jaxpr.jaxpr, {})
    conv_in = counts.get(("conv_general_dilated", True), 0)
    conv_out = counts.get(("conv_general_dilated", False), 0)
    assert conv_in > 0 and conv_out == 0, counts


def test_non_final_vmapped_steps_call_no_reward(disc, monkeypatch):
    """A host callback inside the reward fires on the episode's last step only."""
    cfg, params = disc
    calls = []
    original = E.episode_reward

    def counted(key, state, params):
        jax.debug.callback(lambda: calls.append(1))
        return original(key, state, params)

    monkeypatch.setattr(E, "episode_reward", counted)
    n = 2
    vstep = jax.jit(jax.vmap(E.step, (0, 0, 0, None)))
    _, st = jax.vmap(E.reset, (0, None))(jax.random.split(jax.random.key(0), n), params)
    per_step = []
    for t in range(28):
        keys = jax.random.split(jax.random.key(t), n)
        _, st, r, term, _, _ = vstep(keys, st, jnp.full((n,), t % 8), params)
        jax.block_until_ready(r)
        jax.effects_barrier()
        per_step.append(len(calls))
    assert per_step[26] == 0, per_step  # no reward pass in 27 non-final steps
    assert per_step[27] == n  # one per env at the end


# ------------------------------------------------------------ invalid rewards
@pytest.mark.parametrize("kind", ["nwot", "acc", "loss"])
def test_nan_supernet_gives_the_invalid_reward_below_valid_ones(digits, kind):
    disc_kind = kind == "nwot"
    cfg = E.EnvConfig(
        kind="discrete" if disc_kind else "continuous",
        net=NET,
        reward=RewardConfig(kind),
        batch_size=16,
        crop_pad=1,
    )
    params = _params(cfg, digits)
    _, st = E.reset(jax.random.key(0), params)
    if disc_kind:  # a finished discrete architecture
        st = st.replace(alpha_normal=st.alpha_normal.at[:, 0].set(1e6))
    reward = jax.jit(E.episode_reward)
    r_ok, v_ok, _ = reward(jax.random.key(1), st, params)
    r_bad, v_bad, _ = reward(jax.random.key(1), st, _nan_params(params))
    assert bool(v_ok) and not bool(v_bad)
    assert float(r_bad) == INVALID_REWARD[kind] and np.isfinite(float(r_bad))
    assert float(r_bad) < float(r_ok)


def test_grad_obs_reward_goes_through_the_guard(cont):
    """The continuous grad-obs path reuses its forward, with the same guard."""
    cfg, params = cont
    step = _jit_step()
    bad = _nan_params(params)
    _, st = E.reset(jax.random.key(0), bad)
    for t in range(28):
        action = jnp.zeros(cfg.num_ops)
        _, st, r, term, _, info = step(jax.random.key(t), st, action, bad)
    assert bool(term) and not bool(info["valid"])
    assert float(info["raw_reward"]) == INVALID_REWARD["acc"] == float(r)


def test_original_nwot_flavour_scores_one_fixed_batch(digits):
    cfg = E.EnvConfig(
        kind="discrete",
        net=NET,
        reward=RewardConfig("nwot"),
        batch_size=16,
        crop_pad=1,
        nwot_flavour="original",
    )
    assert cfg.reward.bn_train and cfg.reward_batch_size == 128
    with pytest.raises(ValueError, match="first 128 validation images"):
        _params(cfg, digits, valid=100)
    params = _params(cfg, digits)
    _, s1 = E.reset(jax.random.key(0), params)
    _, s2 = E.reset(jax.random.key(7), params)
    arch = jnp.zeros_like(s1.alpha_normal).at[:, 1].set(1e6)
    s1 = s1.replace(alpha_normal=arch, alpha_reduce=arch)
    s2 = s2.replace(alpha_normal=arch, alpha_reduce=arch, valid_pos=s1.valid_pos + 5)
    reward = jax.jit(E.episode_reward)
    r1, ok1, _ = reward(jax.random.key(1), s1, params)
    r2, ok2, _ = reward(jax.random.key(2), s2, params)
    # Other keys and validation positions: the same batch, no augmentation.
    assert bool(ok1 & ok2) and float(r1) == float(r2)
    x, y = E.nwot_original_batch(
        params.valid_images, params.valid_labels, params.mean, params.std
    )
    assert x.shape[0] == 128
    net = cfg.supernet
    cn, cr = net.choices(arch, arch)
    rh, _ = score_one(net, params.variables, cn, cr, x, y, cfg.reward)
    assert float(r1) == pytest.approx(float(rh), rel=1e-6)
    # Train-mode BN differs from the reference flavour's eval mode.
    ref = dataclasses.replace(cfg.reward, bn_train=False)
    r_eval, _ = score_one(net, params.variables, cn, cr, x, y, ref)
    assert float(r_eval) != float(rh)
