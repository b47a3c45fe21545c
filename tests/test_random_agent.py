"""Random-search agent: uniform actions, no learning, the search's run folder."""

import json

import jax
import numpy as np
import pytest
from test_ppo_train import (
    CONT_PARAMS,
    DISC_PARAMS,
    EdgeBandit,
    K,
    L,
    assert_trees_equal,
)
from test_search_cli import RUN_FILES, TINY, _metrics

from jaxdarts import search
from jaxdarts.ppo.random_agent import make_random
from jaxdarts.ppo.train import PPOConfig

# chi-square critical values at p = 0.001 (df = 2 and df = 9)
CHI2_999 = {2: 13.82, 9: 27.88}


def _chi2(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def _play(env, env_params, updates=4):
    cfg = PPOConfig(n_steps=64)
    init_fn, chunk_fn = make_random(cfg, env)
    state0 = jax.jit(init_fn)(jax.random.key(3), env_params)
    params0 = jax.tree.map(np.asarray, state0.params)
    opt0 = jax.tree.map(np.asarray, state0.opt_state)
    collected = []
    chunk = jax.jit(chunk_fn, static_argnums=2)
    state = state0
    for _ in range(updates):  # a rollout's actions are stored in info["arch"]
        state, metrics = chunk(state, env_params, 1)
        collected.append(metrics)
    return state, params0, opt0, collected


def test_discrete_actions_uniform_and_params_unchanged():
    env = EdgeBandit(num_envs=16)
    state, params0, opt0, metrics = _play(env, DISC_PARAMS)
    assert_trees_equal(state.params, params0)
    assert_trees_equal(state.opt_state, opt0)
    # each finished episode's score = fraction of edges with the best op: under
    # uniform actions each edge hits with probability 1/K
    means = np.array([m["episode_return_mean"][0] for m in metrics])
    assert abs(means.mean() - 1 / K) < 0.05, means
    assert "policy_loss" not in metrics[0] and "reward_mean" not in metrics[0]
    assert np.allclose(metrics[0]["entropy"], np.log(K))
    # op counts of many uniform draws
    from jaxdarts.ppo.random_agent import uniform_act

    obs = np.zeros((30_000, L), np.float32)
    a, logp, v = uniform_act("discrete", K, None, obs, jax.random.key(0), False)
    counts = np.bincount(np.asarray(a), minlength=K)
    assert counts.size == K and _chi2(counts) < CHI2_999[K - 1], counts
    assert np.allclose(logp, -np.log(K)) and not np.asarray(v).any()


def test_continuous_actions_uniform_in_box():
    from jaxdarts.ppo.random_agent import uniform_act

    obs = np.zeros((5_000, L), np.float32)
    a, logp, _ = uniform_act("continuous", 4, None, obs, jax.random.key(1), False)
    a = np.asarray(a).reshape(-1)
    assert a.min() >= -1 and a.max() <= 1
    counts, _ = np.histogram(a, bins=10, range=(-1, 1))
    assert _chi2(counts) < CHI2_999[9], counts
    assert np.allclose(logp, -4 * np.log(2))
    env = EdgeBandit(num_envs=8, continuous=True)
    state, params0, _, _ = _play(env, CONT_PARAMS, updates=1)
    assert_trees_equal(state.params, params0)


@pytest.mark.slow
def test_random_search_run_folder_matches_ppo(tmp_path):
    out = tmp_path / "random"
    assert search.main(TINY + ["--agent", "random", "--out", str(out)]) == 0
    for name in RUN_FILES:
        assert (out / name).exists(), name
    assert json.load(open(out / "config.json"))["agent"] == "random"
    metrics = _metrics(out)
    assert [m["update"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        for key in ("reward_mean", "reward_min", "reward_max", "num_episodes"):
            assert key in m and m[key] is not None
        assert "policy_loss" not in m and "approx_kl" not in m
    top = json.load(open(out / "top_architectures.json"))
    assert top == sorted(top, key=lambda t: -t["reward"])
    best = max(m["reward_max"] for m in metrics)
    assert np.isclose(top[0]["reward"], best)
    # the final genotype of random search is the best architecture seen
    g = json.load(open(out / "genotype.json"))
    assert np.isclose(g["reward"], top[0]["reward"]) and g["policy"] == "best_seen"
    assert g["normal"] == top[0]["genotype"]["normal"]
    assert g["reduce"] == top[0]["genotype"]["reduce"]
