"""Window ops: the fused and loop implementations against a NumPy float64
reference, and the ``fused`` form's custom gradients against autodiff of the loop and
shift forms (the loop form's, exactly)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import ops

# (kernel, pad, dilation): sep_conv 3x3, dil_conv 5x5.
DW = [(3, 1, 1), (5, 4, 2)]


def numpy_depthwise(x, w, stride, pad, dil):
    """Direct float64 depthwise cross-correlation. ``x [B,H,W,C]``, ``w [k,k,C]``."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (x.shape[1] + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (x.shape[2] + 2 * pad - dil * (k - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for i in range(k):
        for j in range(k):
            win = xp[:, i * dil :, j * dil :][:, : (ho - 1) * stride + 1 : stride]
            out += win[:, :, : (wo - 1) * stride + 1 : stride] * w[i, j]
    return out


def numpy_pool(x, stride, kind):
    x = np.asarray(x, np.float64)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
    cnt = np.pad(np.ones(x.shape[1:3]), 1)
    ho = (x.shape[1] - 1) // stride + 1
    wo = (x.shape[2] - 1) // stride + 1
    wins, counts = [], []
    for i in range(3):
        for j in range(3):
            sl = (slice(i, i + (ho - 1) * stride + 1, stride),)
            sl += (slice(j, j + (wo - 1) * stride + 1, stride),)
            wins.append(xp[:, sl[0], sl[1]])
            counts.append(cnt[sl])
    if kind == "max":
        return np.max(wins, 0)
    return np.sum(wins, 0) / np.sum(counts, 0)[None, :, :, None]


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.key(0), (2, 9, 8, 3))


@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k,pad,dil", DW)
def test_depthwise_matches_numpy(x, impl, stride, k, pad, dil):
    w = jax.random.normal(jax.random.key(k + dil), (k, k, 3))
    got = ops.depthwise_conv(x, w, stride, pad, dil, impl)
    want = numpy_depthwise(x, w, stride, pad, dil)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_match_numpy(x, impl, stride, kind):
    fn = ops.max_pool if kind == "max" else ops.avg_pool
    got = fn(x, stride, impl)
    np.testing.assert_allclose(
        np.asarray(got), numpy_pool(x, stride, kind), rtol=1e-6, atol=1e-6
    )


def _grads(f, x, *args):
    """Gradient of a fixed random projection of ``f``'s output."""

    def loss(x, *a):
        y = f(x, *a)
        r = jax.random.normal(jax.random.key(9), y.shape)
        return jnp.sum(y * r)

    return jax.grad(loss, argnums=tuple(range(1 + len(args))))(x, *args)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k,pad,dil", DW)
def test_fused_depthwise_gradient_is_the_loop_gradient(x, stride, k, pad, dil):
    w = jax.random.normal(jax.random.key(k), (k, k, 3))
    fused = _grads(
        lambda a, b: ops.depthwise_conv(a, b, stride, pad, dil, "fused"), x, w
    )
    loop = _grads(lambda a, b: ops.depthwise_conv(a, b, stride, pad, dil, "loop"), x, w)
    shift = _grads(
        lambda a, b: ops.depthwise_conv(a, b, stride, pad, dil, "shift"), x, w
    )
    for f, lo, s in zip(fused, loop, shift, strict=True):
        np.testing.assert_array_equal(np.asarray(f), np.asarray(lo))
        np.testing.assert_allclose(np.asarray(f), np.asarray(s), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_fused_pool_gradient_is_the_loop_gradient(x, stride, kind):
    fn = ops.max_pool if kind == "max" else ops.avg_pool
    (fused,) = _grads(lambda a: fn(a, stride, "fused"), x)
    (loop,) = _grads(lambda a: fn(a, stride, "loop"), x)
    np.testing.assert_array_equal(np.asarray(fused), np.asarray(loop))
    assert np.abs(np.asarray(fused)).sum() > 0


def test_fused_gradient_under_vmap_and_jit(x):
    w = jax.random.normal(jax.random.key(3), (2, 3, 3, 3))

    def f(impl):
        def one(wi):
            return jnp.sum(ops.depthwise_conv(x, wi, 2, 1, 1, impl) ** 2)

        return jax.jit(jax.vmap(jax.grad(one)))(w)

    np.testing.assert_allclose(
        np.asarray(f("fused")), np.asarray(f("loop")), rtol=1e-6, atol=1e-6
    )


def test_impl_names():
    assert ops.resolve_impl("auto") in ("loop", "xla")
    assert ops.resolve_impl("fused") == "fused"
    with pytest.raises(ValueError, match="'fused'"):
        ops.resolve_impl("winograd")
