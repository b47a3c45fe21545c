"""The fast forms of the supernet equal the reference forms on the same weights.

Reference: the ``xla`` op implementation (XLA's own grouped convolutions and
``reduce_window`` pools, autodiff gradients: no code shared with the fast forms, and
the quickest of the forms to compile) with the edges in ``lax.scan``
(``edges="scan"``, the default). Fast: the ``fused`` ops
(the CPU default: shifted sums, closed-form gradients) with the scanned edges and with
unrolled edges. Discrete forward passes agree in logits
(1e-5) and NWOT (1e-4 relative); the fused dense path's loss, parameter and alpha
gradients and updated BN statistics agree to ~1e-5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts.rewards import nwot_score
from jaxdarts.spaces import NUM_EDGES, SPACES
from jaxdarts.supernet import Supernet, SupernetConfig

C, LAYERS, HW, BATCH = 4, 3, 8, 8
OPS = SPACES["darts"].primitives
ARCHS = (
    ([OPS[e % 8] for e in range(NUM_EDGES)], [OPS[(3 * e + 1) % 8] for e in range(14)]),
    ([OPS[(5 * e + 2) % 8] for e in range(NUM_EDGES)], [OPS[(e + 4) % 8] for e in range(14)]),
)  # fmt: skip
REFERENCE = ("xla", "scan")
FAST = (("fused", "scan"), ("fused", "unroll"))


def make(impl_edges):
    impl, edges = impl_edges
    return Supernet(SupernetConfig(channels=C, layers=LAYERS, impl=impl, edges=edges))


@pytest.fixture(scope="module")
def variables():
    return make(REFERENCE).init(jax.random.key(0), (HW, HW, 1))


@pytest.fixture(scope="module")
def data():
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (BATCH, HW, HW, 1))
    return x, jax.random.randint(ky, (BATCH,), 0, 10)


def discrete(impl_edges, variables, x):
    net = make(impl_edges)
    fn = jax.jit(lambda v, a, b, x: net.apply_discrete(v, a, b, x, collect=True)[:2])
    return [fn(variables, *net.choices_from_ops(*arch), x) for arch in ARCHS]


@pytest.fixture(scope="module")
def reference_discrete(variables, data):
    return discrete(REFERENCE, variables, data[0])


@pytest.mark.parametrize("fast", FAST, ids=["-".join(f) for f in FAST])
def test_discrete_forward_matches_the_reference(
    fast, variables, data, reference_discrete
):
    for (la, sa), (lb, sb) in zip(
        discrete(fast, variables, data[0]), reference_discrete, strict=True
    ):
        np.testing.assert_allclose(np.asarray(la), np.asarray(lb), rtol=1e-5, atol=1e-5)
        assert int(sa.units) == int(sb.units)
        # The codes may only differ where a ReLU input sits within rounding of 0.
        diff = np.abs(np.asarray(sa.kernel()) - np.asarray(sb.kernel()))
        assert diff.max() <= 1e-4 * int(sb.units)
        (ra, oka), (rb, okb) = nwot_score(sa), nwot_score(sb)
        assert bool(oka) and bool(okb)
        np.testing.assert_allclose(float(ra), float(rb), rtol=1e-4)


def dense_step(impl_edges, variables, x, y, alphas):
    """Loss, parameter / alpha gradients and new BN stats of a train-mode step."""
    net = make(impl_edges)

    def loss(params, an, ar):
        wn, wr = net.edge_weights(an, ar)
        v = {"params": params, "batch_stats": variables["batch_stats"]}
        logits, _, bs = net.apply_dense(v, wn, wr, x, train=True, mutable=True)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], -1)), bs

    fn = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))
    return fn(variables["params"], *alphas)


def test_dense_gradients_match_the_reference(variables, data):
    alphas = jax.random.normal(jax.random.key(2), (2, NUM_EDGES, 8))
    ref = dense_step(REFERENCE, variables, *data, alphas)
    got = dense_step(FAST[0], variables, *data, alphas)
    (l_ref, bs_ref), g_ref = ref
    (l_got, bs_got), g_got = got
    np.testing.assert_allclose(float(l_got), float(l_ref), rtol=1e-6)
    for name, a, b in (("grads", g_got, g_ref), ("batch_stats", bs_got, bs_ref)):
        leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
        assert jax.tree.structure(a) == jax.tree.structure(b), name
        # Rounding is relative to the whole tree's scale: a leaf whose true gradient
        # is 0 (a BN bias feeding only a train-mode BN) holds rounding noise.
        scale = max(np.abs(np.asarray(v)).max() for v in leaves_b)
        for u, v in zip(leaves_a, leaves_b, strict=True):
            u, v = np.asarray(u), np.asarray(v)
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
    assert np.abs(np.asarray(g_got[1])).max() > 0  # the alphas get a gradient


def test_shared_preprocessing_codes_give_the_same_statistics(
    variables, data, reference_discrete, monkeypatch
):
    """Each cell state's preprocessing-ReLU statistics are computed once and reused;
    recomputing them for every ReLU (no reuse) gives identical integer statistics."""
    from jaxdarts import supernet

    monkeypatch.setattr(
        supernet,
        "_memo_stats",
        lambda codes, b, memo: supernet.codes_to_stats(codes, b),
    )
    for (la, sa), (lb, sb) in zip(
        discrete(REFERENCE, variables, data[0]), reference_discrete, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
        for u, v in zip(sa, sb, strict=True):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
