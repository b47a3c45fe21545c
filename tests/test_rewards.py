"""Rewards: NWOT against an independent float64 NumPy computation, acc / loss by hand,
invalid kernels, and the batched scorers against one another.

The supernet is tiny (darts, C=4, 3 cells, 8x8x1 images, batch 8, ``xla`` op
implementation) and each jitted scorer is compiled once per module.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import ops as ops_lib
from jaxdarts.rewards import (
    RewardConfig,
    accuracy,
    neg_loss,
    nwot_score,
    score_architectures,
    score_one,
)
from jaxdarts.spaces import EDGE_INPUT, NUM_EDGES, SPACES
from jaxdarts.supernet import NwotStats, Supernet, SupernetConfig, codes_to_stats

C, LAYERS, HW, BATCH = 4, 3, 8, 8
INVALID = -5.0
DARTS_OPS = SPACES["darts"].primitives
ARCHS = (
    ([DARTS_OPS[e % 8] for e in range(NUM_EDGES)],
     [DARTS_OPS[(3 * e + 1) % 8] for e in range(NUM_EDGES)]),
    (["sep_conv_3x3"] * 7 + ["dil_conv_5x5"] * 7,
     ["skip_connect", "max_pool_3x3"] * 7),
    (["none"] * NUM_EDGES, ["avg_pool_3x3"] * NUM_EDGES),
)  # fmt: skip


def counted_relus(normal, reduce, hw: int, channels: int, layers: int):
    """``(ReLU calls, units per sample)`` of the ReLUs that run (the reference implementation; docs/semantics.md).

    Preprocessing: 2 per cell; sep_conv: 2 (input, strided intermediate); dil_conv
    and conv: 1; skip_connect at stride 2 (FactorizedReduce): 1; the rest: 0.
    Reductions at cells L//3 and 2L//3 double the channels and halve the size.
    """
    h_pp = h_p = hw
    c_pp = c_p = 3 * channels
    c, calls, units = channels, 0, 0
    for i in range(layers):
        red = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if red else c
        calls += 2
        units += h_pp * h_pp * c_pp + h_p * h_p * c_p
        for e, op in enumerate(reduce if red else normal):
            stride = 2 if red and EDGE_INPUT[e] < 2 else 1
            h = h_p if (EDGE_INPUT[e] < 2 or not red) else h_p // 2
            if op.startswith("sep_conv"):
                calls += 2
                units += h * h * c + (-(-h // stride)) ** 2 * c
            elif op.startswith(("dil_conv", "conv_")) or (
                op == "skip_connect" and stride == 2
            ):
                calls += 1
                units += h * h * c
        c_pp, h_pp, c_p, h_p = c_p, h_p, 4 * c, (h_p // 2 if red else h_p)
    return calls, units


def numpy_nwot(codes: list[np.ndarray], batch: int):
    """K = sum c c^T + (1-c)(1-c)^T over the binary codes, float64; log|det K|."""
    c = np.concatenate([(x.reshape(batch, -1) > 0) for x in codes], 1)
    c = c.astype(np.float64)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = np.linalg.slogdet(k)
    return k, sign, logdet


# ------------------------------------------------------------------ fixtures

RECORDED: list[np.ndarray] = []


def _record(x) -> None:
    RECORDED.append(np.asarray(x))


@pytest.fixture(scope="module")
def net():
    return Supernet(SupernetConfig(channels=C, layers=LAYERS, impl="xla"))


@pytest.fixture(scope="module")
def variables(net):
    return net.init(jax.random.key(0), (HW, HW, 1))


@pytest.fixture(scope="module")
def data():
    kx, ky = jax.random.split(jax.random.key(1))
    images = jax.random.normal(kx, (len(ARCHS), BATCH, HW, HW, 1))
    labels = jax.random.randint(ky, (len(ARCHS), BATCH), 0, 10)
    return images, labels


@pytest.fixture(scope="module")
def archs(net):
    cn, cr = zip(*(net.choices_from_ops(n, r) for n, r in ARCHS), strict=True)
    return jnp.stack(cn), jnp.stack(cr)


@pytest.fixture(scope="module")
def one(net, variables, archs, data):
    """Compiled ``score_one`` (nwot, discrete) whose ReLUs also report their inputs.

    ``jaxdarts.ops.relu`` is patched only while tracing: the compiled function then
    calls back with the input of every ReLU that runs, into ``RECORDED``.
    """
    config = RewardConfig(kind="nwot", path="discrete", invalid_reward=INVALID)
    original = ops_lib.relu

    def recording_relu(x, codes, rectified=False):
        jax.debug.callback(_record, x)
        return original(x, codes, rectified)

    def f(v, a, b, x, y):
        return score_one(net, v, a, b, x, y, config)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops_lib, "relu", recording_relu)
        args = (variables, archs[0][0], archs[1][0], data[0][0], data[1][0])
        compiled = jax.jit(f).lower(*args).compile()

    def run(*args):
        RECORDED.clear()
        out = compiled(*args)
        jax.block_until_ready(out)
        jax.effects_barrier()
        return float(out[0]), bool(out[1]), list(RECORDED)

    return run


# ------------------------------------------------------------------ NWOT


@pytest.mark.parametrize("i", range(len(ARCHS)))
def test_nwot_equals_numpy_float64(one, variables, archs, data, i):
    images = data[0][i]
    reward, valid, codes = one(variables, archs[0][i], archs[1][i], images, data[1][i])
    calls, units = counted_relus(*ARCHS[i], HW, C, LAYERS)
    assert len(codes) == calls  # exactly the ReLUs of the chosen ops ran
    assert sum(x[0].size for x in codes) == units
    k, sign, logdet = numpy_nwot(codes, BATCH)
    np.testing.assert_array_equal(k, k.T)
    np.testing.assert_array_equal(np.diag(k), units)
    assert sign != 0 and valid
    assert reward == pytest.approx(logdet, rel=1e-6)
    # The library's integer kernel of the same codes is exactly K.
    stats = codes_to_stats([jnp.asarray(x) for x in codes], BATCH)
    np.testing.assert_array_equal(np.asarray(stats.kernel()), k)
    assert int(stats.units) == units
    score, ok = nwot_score(stats)
    assert bool(ok) and float(score) == pytest.approx(logdet, rel=1e-6)


def test_nwot_is_invariant_to_the_batch_order(one, variables, archs, data):
    x, y = data[0][0], data[1][0]
    perm = np.random.default_rng(0).permutation(BATCH)
    r1, ok1, _ = one(variables, archs[0][0], archs[1][0], x, y)
    r2, ok2, _ = one(variables, archs[0][0], archs[1][0], x[perm], y[perm])
    assert ok1 and ok2
    assert r2 == pytest.approx(r1, rel=1e-6)


def test_singular_kernel_gives_the_invalid_reward(one, variables, archs, data):
    x, y = data[0][0], data[1][0]
    dup = x.at[3].set(x[5])  # two identical images: two identical rows of K
    reward, valid, codes = one(variables, archs[0][0], archs[1][0], dup, y)
    k, sign, _ = numpy_nwot(codes, BATCH)
    np.testing.assert_array_equal(k[3], k[5])
    assert sign == 0
    assert not valid
    assert reward == INVALID and not math.isnan(reward)


def test_nwot_score_by_hand():
    # codes of 2 samples over 3 units: [1,0,1] and [1,1,0]
    # K = [[3, 1], [1, 3]] (agreements), det = 8
    stats = codes_to_stats([jnp.array([[1.0, -1.0, 2.0], [3.0, 4.0, -5.0]])], 2)
    np.testing.assert_array_equal(np.asarray(stats.kernel()), [[3, 1], [1, 3]])
    score, ok = nwot_score(stats)
    assert bool(ok) and float(score) == pytest.approx(math.log(8.0), rel=1e-6)
    # two layers add: [1,0] / [0,0] -> K2 = [[2, 1], [1, 2]]; K = [[5, 2], [2, 5]]
    stats = codes_to_stats(
        [
            jnp.array([[1.0, -1.0, 2.0], [3.0, 4.0, -5.0]]),
            jnp.array([[1.0, 0], [0, 0]]),
        ],
        2,
    )
    np.testing.assert_array_equal(np.asarray(stats.kernel()), [[5, 2], [2, 5]])
    assert float(nwot_score(stats)[0]) == pytest.approx(math.log(21.0), rel=1e-6)
    # identical codes: singular, flagged, not NaN
    same = codes_to_stats([jnp.array([[1.0, -1.0], [1.0, -1.0]])], 2)
    score, ok = nwot_score(same)
    assert not bool(ok) and not np.isnan(float(score))


def test_nwot_log_determinant_is_float64():
    # K = [[2^24+3, 2^24+1], [2^24+1, 2^24+3]]: det = 2^26 + 8 exactly, while in
    # float32 the entries round to 2^24+4 and 2^24 (det 2^27 + 16, log 0.69 higher).
    stats = NwotStats(
        jnp.eye(2, dtype=jnp.int32), jnp.ones(2, jnp.int32), jnp.int32(2**24 + 3)
    )
    np.testing.assert_array_equal(
        np.asarray(stats.kernel()), [[2**24 + 3, 2**24 + 1], [2**24 + 1, 2**24 + 3]]
    )
    for fn in (nwot_score, jax.jit(nwot_score)):
        score, ok = fn(stats)
        assert bool(ok)
        assert float(score) == pytest.approx(math.log(2**26 + 8), rel=1e-6)


def rank_deficient_codes() -> np.ndarray:
    """8 distinct codes over 50 units with c0 + c1 = c2 + c3 (unit by unit).

    Then v_i = [c_i, 1 - c_i] satisfy v0 + v1 = v2 + v3, so K = V V^T is singular
    (rank 7) without two equal rows.
    """
    rng = np.random.default_rng(0)
    c = rng.random((8, 50)) > 0.5
    pick = rng.random(50) > 0.5
    split = c[0] ^ c[1]  # c0 + c1 == 1: one of c2, c3 takes the unit
    c[2] = np.where(split, pick, c[0])
    c[3] = np.where(split, ~pick, c[0])
    return c


def test_rank_deficient_kernel_without_equal_rows_is_invalid():
    c = rank_deficient_codes()
    ci = c.astype(np.int64)
    k = ci @ ci.T + (1 - ci) @ (1 - ci).T
    assert np.linalg.matrix_rank(k.astype(np.float64)) == 7
    assert len({tuple(r) for r in k}) == 8  # no two equal rows
    stats = codes_to_stats([jnp.asarray(np.where(c, 1.0, -1.0))], 8)
    np.testing.assert_array_equal(np.asarray(stats.kernel()), k)
    score, ok = nwot_score(stats)
    assert not bool(ok)


# ------------------------------------------------------------------ acc / loss


def test_accuracy_and_neg_loss_by_hand():
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 5.0], [0, 0, 0]])
    labels = jnp.array([0, 2, 2, 1])
    # argmax = [0, 1, 2, 0] (ties -> lowest index): right, wrong, right, wrong
    assert float(accuracy(logits, labels)) == 0.5
    lg = np.asarray(logits, np.float64)
    logp = lg - np.log(np.exp(lg).sum(1, keepdims=True))
    want = np.mean([logp[0, 0], logp[1, 2], logp[2, 2], logp[3, 1]])
    assert float(neg_loss(logits, labels)) == pytest.approx(want, rel=1e-6)
    # uniform logits over 10 classes: -log(10) = -2.3026 (the reference implementation; docs/semantics.md)
    flat = neg_loss(jnp.zeros((4, 10)), jnp.array([0, 3, 5, 9]))
    assert float(flat) == pytest.approx(-math.log(10), rel=1e-6)


def test_reward_config_errors():
    with pytest.raises(ValueError, match="unknown reward 'nwt'"):
        RewardConfig(kind="nwt")
    with pytest.raises(ValueError, match="'discrete' or 'dense'"):
        RewardConfig(path="sparse")
    assert RewardConfig().kind == "nwot" and RewardConfig().invalid_reward == -1.0


# ------------------------------------------------------------------ batched


def test_per_arch_batches_equal_score_one(one, net, variables, archs, data):
    images, labels = data
    images = images.at[2, 1].set(images[2, 0])  # arch 2 gets a singular batch
    config = RewardConfig(kind="nwot", path="discrete", invalid_reward=INVALID)
    rewards, valid = jax.jit(
        lambda v, a, b, x, y: score_architectures(net, v, a, b, x, y, config)
    )(variables, archs[0], archs[1], images, labels)
    assert rewards.shape == valid.shape == (len(ARCHS),)
    for i in range(len(ARCHS)):
        r, ok, _ = one(variables, archs[0][i], archs[1][i], images[i], labels[i])
        assert bool(valid[i]) == ok
        assert float(rewards[i]) == pytest.approx(r, rel=1e-6)
    assert list(np.asarray(valid)) == [True, True, False]
    assert float(rewards[2]) == INVALID


def test_discrete_map_equals_dense_vmap_on_one_hot():
    # S3 (none, skip_connect, sep_conv_3x3; `none` first) compiles fast. One batch
    # shared by all architectures (the other tests give each its own).
    net = Supernet(SupernetConfig(space="s3", channels=C, layers=LAYERS, impl="xla"))
    variables = net.init(jax.random.key(3), (HW, HW, 1))
    rng = np.random.default_rng(0)
    cn, cr = jnp.asarray(rng.integers(0, len(net.op_names), (2, 4, NUM_EDGES)))
    wn, wr = jax.vmap(net.one_hot_weights)(cn, cr)
    x = jax.random.normal(jax.random.key(4), (BATCH, HW, HW, 1))
    y = jnp.arange(BATCH) % 10

    def rewards(path, an, ar):
        config = RewardConfig(kind="nwot", path=path)
        return jax.jit(
            lambda v, a, b, x, y: score_architectures(net, v, a, b, x, y, config)
        )(variables, an, ar, x, y)

    r_map, ok_map = rewards("discrete", cn.astype(jnp.int32), cr.astype(jnp.int32))
    r_vmap, ok_vmap = rewards("dense", wn, wr)
    assert r_map.shape == r_vmap.shape == (4,)
    assert np.asarray(ok_map).all() and np.asarray(ok_vmap).all()
    np.testing.assert_allclose(np.asarray(r_map), np.asarray(r_vmap), rtol=1e-6)
    assert len(set(np.asarray(r_map).round(3))) > 1  # the architectures differ
