"""GAE, PPO loss and network-init checks against hand-worked numbers and SB3's loop."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts.ppo.losses import (
    PPOBatch,
    clipped_surrogate,
    compute_gae,
    normalize_advantages,
    ppo_loss,
)
from jaxdarts.ppo.networks import act, init_agent, policy_and_value


def sb3_gae_float64(rewards, values, episode_starts, last_values, dones, gamma, lam):
    """Line-by-line NumPy float64 port of SB3 ``compute_returns_and_advantage``.

    Arrays are ``[T, n_envs]`` as in SB3's ``RolloutBuffer``.
    """
    rewards, values = np.float64(rewards), np.float64(values)
    episode_starts = np.float64(episode_starts)
    last_values, dones = np.float64(last_values), np.float64(dones)
    buffer_size = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    last_gae_lam = 0
    for step in reversed(range(buffer_size)):
        if step == buffer_size - 1:
            next_non_terminal = 1.0 - dones
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[step + 1]
            next_values = values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        last_gae_lam = delta + gamma * lam * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    return advantages, advantages + values


def test_gae_hand_computed_done_in_middle():
    # 4 steps, gamma = lam = 0.5 (gamma * lam = 0.25). The env step at t = 1 returns
    # done, so observation 2 starts a new episode: episode_starts = [0, 0, 1, 0].
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
    values = jnp.array([0.5, 1.0, 1.5, 2.0])
    starts = jnp.array([0.0, 0.0, 1.0, 0.0])
    # next_non_terminal = [1 - s1, 1 - s2, 1 - s3, 1 - last_done] = [1, 0, 1, 1]
    # next_values       = [1.0, 1.5, 2.0, last_value = 4.0]
    # delta0 = 1 + 0.5 * 1.0 * 1 - 0.5 = 1.0
    # delta1 = 2 + 0.5 * 1.5 * 0 - 1.0 = 1.0   (no bootstrap across the episode end)
    # delta2 = 3 + 0.5 * 2.0 * 1 - 1.5 = 2.5
    # delta3 = 4 + 0.5 * 4.0 * 1 - 2.0 = 4.0
    # adv3 = 4.0
    # adv2 = 2.5 + 0.25 * 1 * 4.0 = 3.5
    # adv1 = 1.0 + 0.25 * 0 * 3.5 = 1.0
    # adv0 = 1.0 + 0.25 * 1 * 1.0 = 1.25
    # returns = adv + values = [1.75, 2.0, 5.0, 6.0]
    adv, ret = compute_gae(rewards, values, starts, 4.0, 0.0, 0.5, 0.5)
    np.testing.assert_allclose(adv, [1.25, 1.0, 3.5, 4.0], rtol=1e-6)
    np.testing.assert_allclose(ret, [1.75, 2.0, 5.0, 6.0], rtol=1e-6)

    # Same trajectory but the last step also ends an episode (last_done = 1):
    # delta3 = 4 - 2.0 = 2.0 -> adv3 = 2.0; adv2 = 2.5 + 0.25 * 2.0 = 3.0;
    # adv1 = 1.0 (cut); adv0 = 1.0 + 0.25 * 1.0 = 1.25.
    adv, _ = compute_gae(rewards, values, starts, 4.0, True, 0.5, 0.5)
    np.testing.assert_allclose(adv, [1.25, 1.0, 3.0, 2.0], rtol=1e-6)

    # episode_starts[0] is never read (SB3 only reads episode_starts[step + 1]).
    adv0, _ = compute_gae(rewards, values, starts.at[0].set(1.0), 4.0, 0.0, 0.5, 0.5)
    np.testing.assert_allclose(adv0, [1.25, 1.0, 3.5, 4.0], rtol=1e-6)


def test_gae_matches_sb3_loop_on_random_data():
    rng = np.random.default_rng(0)
    t, n_envs = 64, 3
    rewards = rng.normal(size=(t, n_envs)).astype(np.float32)
    values = rng.normal(size=(t, n_envs)).astype(np.float32)
    starts = rng.random((t, n_envs)) < 0.2
    last_values = rng.normal(size=n_envs).astype(np.float32)
    last_dones = np.array([True, False, True])
    want_adv, want_ret = sb3_gae_float64(
        rewards, values, starts, last_values, last_dones, 0.99, 0.95
    )
    # The trainer vmaps the per-trajectory function over the env axis.
    gae = jax.vmap(compute_gae, in_axes=(1, 1, 1, 0, 0, None, None), out_axes=1)
    adv, ret = gae(rewards, values, starts, last_values, last_dones, 0.99, 0.95)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)


def test_gae_rejects_batched_input():
    with pytest.raises(ValueError, match="one trajectory"):
        compute_gae(jnp.zeros((4, 2)), jnp.zeros((4, 2)), jnp.zeros((4, 2)), 0, 0, 1, 1)


# Chosen (ratio, advantage) pairs with clip 0.2, i.e. ratios clipped to [0.8, 1.2]:
#   r=0.5, A=+2: min(0.5*2,  0.8*2)  = min(1.0, 1.6)   =  1.0  (outside, unclipped)
#   r=1.1, A=+1: min(1.1,    1.1)    =  1.1                   (inside)
#   r=1.5, A=+1: min(1.5,    1.2)    =  1.2                   (outside, clipped)
#   r=0.5, A=-1: min(-0.5,  -0.8)    = -0.8                   (outside, clipped)
#   r=1.5, A=-2: min(-3.0,  -2.4)    = -3.0                   (outside, unclipped)
#   r=0.9, A=-1: min(-0.9,  -0.9)    = -0.9                   (inside)
# sum = 1.0 + 1.1 + 1.2 - 0.8 - 3.0 - 0.9 = -1.4; loss = -mean = 1.4 / 6.
RATIOS = np.array([0.5, 1.1, 1.5, 0.5, 1.5, 0.9])
ADVS = np.array([2.0, 1.0, 1.0, -1.0, -2.0, -1.0])
WANT_POLICY_LOSS = 1.4 / 6
# |r - 1| > 0.2 for r in {0.5, 1.5, 0.5, 1.5}: 4 of 6.
WANT_CLIP_FRACTION = 4 / 6


def test_clipped_surrogate_hand_computed():
    loss = clipped_surrogate(jnp.asarray(RATIOS), jnp.asarray(ADVS), 0.2)
    np.testing.assert_allclose(loss, WANT_POLICY_LOSS, rtol=1e-6)


def test_normalize_advantages_uses_unbiased_std():
    # A = [1, 2, 3, 4]: mean 2.5; squared deviations 2.25, 0.25, 0.25, 2.25 (sum 5).
    # torch's std is unbiased: sqrt(5 / 3) = 1.29099 (the biased sqrt(5/4) = 1.11803
    # would give -1.34164 for the first entry). (1 - 2.5) / 1.29099 = -1.16190.
    out = normalize_advantages(jnp.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(out, [-1.16190, -0.38730, 0.38730, 1.16190], atol=1e-5)
    # SB3 skips normalisation for a minibatch of one (GH issue #325).
    np.testing.assert_array_equal(normalize_advantages(jnp.array([3.0])), [3.0])


@functools.cache
def agent(obs_shape, action_kind, action_dim, seed=0):
    """Jitted ``init_agent``, cached so each shape compiles once in this module."""
    init = jax.jit(init_agent, static_argnums=(1, 2, 3))
    return init(jax.random.key(seed), obs_shape, action_kind, action_dim)


@jax.jit
def discrete_heads(params, obs):
    dist, value = policy_and_value(params, obs)
    return dist.logits, value, dist.entropy()


jit_loss = jax.jit(ppo_loss, static_argnums=(2, 3, 4, 5))
jit_act = jax.jit(act, static_argnums=3)


def _discrete_batch(ratios, advantages, value_offsets):
    """A batch whose ratios and value errors are the chosen ones for a real agent."""
    params = agent((6,), "discrete", 3)
    obs = jax.random.normal(jax.random.key(1), (len(ratios), 6))
    actions = jnp.arange(len(ratios)) % 3
    logits, values, entropy = discrete_heads(params, obs)
    new_log_probs = jnp.take_along_axis(
        jax.nn.log_softmax(logits), actions[:, None], axis=1
    )[:, 0]
    batch = PPOBatch(
        obs=obs,
        actions=actions,
        # old = new - log r  =>  exp(new - old) = r
        log_probs=new_log_probs - jnp.log(jnp.asarray(ratios, jnp.float32)),
        values=values,
        advantages=jnp.asarray(advantages, jnp.float32),
        returns=values + jnp.asarray(value_offsets, jnp.float32),
    )
    return params, batch, entropy


def test_ppo_loss_hand_computed():
    # Value errors returns - V = [1, -1, 2, 0, 0, 0]: value_loss = (1 + 1 + 4) / 6 = 1.
    params, batch, entropy = _discrete_batch(RATIOS, ADVS, [1, -1, 2, 0, 0, 0])
    # Positional: clip=0.2, vf_coef=0.5, ent_coef=0.0, normalize_advantage=False.
    loss, m = jit_loss(params, batch, 0.2, 0.5, 0.0, False)
    np.testing.assert_allclose(m["policy_loss"], WANT_POLICY_LOSS, rtol=1e-5)
    np.testing.assert_allclose(m["value_loss"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(m["clip_fraction"], WANT_CLIP_FRACTION, rtol=1e-6)
    # approx_kl = mean((r - 1) - log r):
    #   r=0.5: -0.5 + 0.693147 = 0.193147;  r=1.1: 0.1 - 0.095310 = 0.004690
    #   r=1.5:  0.5 - 0.405465 = 0.094535;  r=0.9: -0.1 + 0.105361 = 0.005361
    #   mean = (2 * 0.193147 + 0.004690 + 2 * 0.094535 + 0.005361) / 6 = 0.097569
    np.testing.assert_allclose(m["approx_kl"], 0.097569, rtol=1e-4)
    # Near-uniform initial policy over 3 actions: entropy ~ log 3.
    np.testing.assert_allclose(m["entropy"], entropy.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["entropy"], math.log(3), rtol=1e-3)
    # loss = policy + 0.5 * value + ent_coef (0) * (-entropy)
    np.testing.assert_allclose(loss, WANT_POLICY_LOSS + 0.5 * 1.0, rtol=1e-5)
    loss_ent, _ = jit_loss(params, batch, 0.2, 0.5, 0.1, False)
    np.testing.assert_allclose(loss_ent, loss - 0.1 * m["entropy"], rtol=1e-5)


def test_ppo_loss_normalises_advantages_per_minibatch():
    params, batch, _ = _discrete_batch(RATIOS, ADVS, [0] * 6)
    _, m = jit_loss(params, batch, 0.2, 0.5, 0.0, True)
    # mean(ADVS) = 0; unbiased std = sqrt((4 + 1 + 1 + 1 + 4 + 1) / 5) = sqrt(2.4).
    normed = ADVS / (math.sqrt(2.4) + 1e-8)
    want = -np.mean(np.minimum(RATIOS * normed, np.clip(RATIOS, 0.8, 1.2) * normed))
    np.testing.assert_allclose(m["policy_loss"], want, rtol=1e-5)


def _orthonormal_gain(kernel):
    """The gain g of a (semi-)orthogonal [in, out] kernel: K^T K or K K^T = g^2 I."""
    k = np.asarray(kernel, np.float64)
    gram = k.T @ k if k.shape[0] >= k.shape[1] else k @ k.T
    g2 = gram[0, 0]
    np.testing.assert_allclose(gram, g2 * np.eye(gram.shape[0]), atol=1e-5 * g2)
    return math.sqrt(g2)


@pytest.mark.parametrize(("obs_shape", "n"), [((6,), 3), ((10, 20), 4)])
def test_orthogonal_init_gains_and_zero_biases(obs_shape, n):
    # (6,): fan-in 6 < 64, rows orthonormal; (10, 20): flattened fan-in 200 > 64.
    params = agent(obs_shape, "discrete", n)["params"]
    for net in ("policy_net", "value_net"):
        assert params[net]["dense_0"]["kernel"].shape == (math.prod(obs_shape), 64)
        for layer in ("dense_0", "dense_1"):
            gain = _orthonormal_gain(params[net][layer]["kernel"])
            np.testing.assert_allclose(gain, math.sqrt(2), rtol=1e-5)
    assert params["action_net"]["kernel"].shape == (64, n)
    np.testing.assert_allclose(
        _orthonormal_gain(params["action_net"]["kernel"]), 0.01, rtol=1e-5
    )
    np.testing.assert_allclose(
        _orthonormal_gain(params["value_head"]["kernel"]), 1.0, rtol=1e-5
    )
    biases = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if path[-1].key == "bias"
    ]
    assert len(biases) == 2 * 2 + 2
    for b in biases:
        np.testing.assert_array_equal(b, 0.0)
    assert "log_std" not in params


def test_continuous_log_std_zero_and_deterministic_mean():
    params = agent((3,), "continuous", 2)
    np.testing.assert_array_equal(params["params"]["log_std"], [0.0, 0.0])
    obs = jax.random.normal(jax.random.key(5), (7, 3))

    @jax.jit
    def heads(params, obs):
        dist, value = policy_and_value(params, obs)
        return dist.mean(), dist.stddev(), value

    mean, std, value = heads(params, obs)
    assert value.shape == (7,)
    np.testing.assert_allclose(std, jnp.ones((7, 2)), rtol=1e-6)
    action, log_prob, v = jit_act(params, obs, jax.random.key(6), True)
    np.testing.assert_array_equal(action, mean)
    np.testing.assert_array_equal(v, value)
    # log N(mu | mu, I_2) = -log(2 pi) = -1.837877
    np.testing.assert_allclose(log_prob, -math.log(2 * math.pi) * np.ones(7), rtol=1e-6)
    sampled, _, _ = jit_act(params, obs, jax.random.key(6), False)
    assert sampled.shape == (7, 2) and not np.allclose(sampled, mean)


def test_discrete_deterministic_is_argmax_and_frame_stack_flattens():
    params = agent((10, 20), "discrete", 4)
    obs = jax.random.normal(jax.random.key(8), (6, 10, 20))
    logits, value, _ = discrete_heads(params, obs)
    flat_logits, flat_value, _ = discrete_heads(params, obs.reshape(6, 200))
    np.testing.assert_allclose(logits, flat_logits, rtol=1e-6)
    np.testing.assert_allclose(value, flat_value, rtol=1e-6)
    action, log_prob, _ = jit_act(params, obs, jax.random.key(9), True)
    assert action.dtype == jnp.int32
    np.testing.assert_array_equal(action, jnp.argmax(logits, axis=-1))
    np.testing.assert_allclose(
        log_prob, jnp.max(jax.nn.log_softmax(logits), -1), rtol=1e-6
    )
    sampled, _, _ = jit_act(params, obs, jax.random.key(9), False)
    assert sampled.shape == (6,) and sampled.dtype == jnp.int32
