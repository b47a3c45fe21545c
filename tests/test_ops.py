"""Window ops and train-mode BatchNorm: the fused and loop implementations against a
NumPy float64 reference, and the ``fused`` form's closed-form gradients against
float64 NumPy gradients and autodiff of the loop and shift forms."""

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


def _windows(xp, k, stride, dil, ho, wo):
    """``((i, j), (rows, cols))`` index slices of each tap into a padded array."""
    for i in range(k):
        for j in range(k):
            rows = slice(i * dil, i * dil + (ho - 1) * stride + 1, stride)
            cols = slice(j * dil, j * dil + (wo - 1) * stride + 1, stride)
            yield (i, j), (rows, cols)


def numpy_depthwise_grads(x, w, r, stride, pad, dil):
    """float64 gradients of ``sum(depthwise(x, w) * r)`` w.r.t. ``x`` and ``w``."""
    x, w, r = (np.asarray(a, np.float64) for a in (x, w, r))
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for (i, j), (rows, cols) in _windows(xp, k, stride, dil, r.shape[1], r.shape[2]):
        dxp[:, rows, cols] += r * w[i, j]
        dw[i, j] = (xp[:, rows, cols] * r).sum((0, 1, 2))
    return dxp[:, pad : pad + x.shape[1], pad : pad + x.shape[2]], dw


def numpy_pool_grad(x, r, stride, kind):
    """float64 gradient of ``sum(pool(x) * r)``: the max pool's goes to the first
    maximum of each window (row-major), the average pool's is split by the count."""
    x, r = np.asarray(x, np.float64), np.asarray(r, np.float64)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=fill)
    cnt = np.pad(np.ones(x.shape[1:3]), 1)
    taps = list(_windows(xp, 3, stride, 1, r.shape[1], r.shape[2]))
    dxp = np.zeros_like(xp)
    if kind == "avg":
        count = sum(cnt[rows, cols] for _, (rows, cols) in taps)[None, :, :, None]
        for _, (rows, cols) in taps:
            dxp[:, rows, cols] += r / count
    else:
        best = np.max([xp[:, rows, cols] for _, (rows, cols) in taps], 0)
        taken = np.zeros(r.shape, bool)
        for _, (rows, cols) in taps:
            hit = (xp[:, rows, cols] == best) & ~taken
            taken |= hit
            dxp[:, rows, cols] += np.where(hit, r, 0.0)
    return dxp[:, 1:-1, 1:-1]


def _projection(f, *args):
    return jax.random.normal(jax.random.key(9), f(*args).shape)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k,pad,dil", DW)
def test_fused_depthwise_gradient_matches_numpy_and_autodiff(x, stride, k, pad, dil):
    w = jax.random.normal(jax.random.key(k), (k, k, 3))
    r = _projection(lambda a: ops.depthwise_conv(a, w, stride, pad, dil, "loop"), x)
    want = numpy_depthwise_grads(x, w, r, stride, pad, dil)
    for impl in ("fused", "loop", "shift"):
        got = _grads(
            lambda a, b, i=impl: ops.depthwise_conv(a, b, stride, pad, dil, i), x, w
        )
        for g, ref in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_fused_pool_gradient_matches_numpy_and_autodiff(x, stride, kind):
    fn = ops.max_pool if kind == "max" else ops.avg_pool
    r = _projection(lambda a: fn(a, stride, "loop"), x)
    want = numpy_pool_grad(x, r, stride, kind)
    for impl in ("fused", "loop"):
        (got,) = _grads(lambda a, i=impl: fn(a, stride, i), x)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    assert np.abs(want).sum() > 0


def test_fused_max_pool_gradient_goes_to_the_first_maximum():
    # Ties: a constant image. Each window's gradient goes to its first element.
    x = jnp.ones((1, 4, 4, 1))
    r = jax.random.normal(jax.random.key(1), (1, 2, 2, 1))
    got = jax.grad(lambda a: jnp.sum(ops.max_pool(a, 2, "fused") * r))(x)
    np.testing.assert_allclose(
        np.asarray(got), numpy_pool_grad(x, r, 2, "max"), rtol=1e-6, atol=1e-6
    )


def test_train_batchnorm_gradient_matches_float64_finite_differences():
    """The closed-form train-mode BN gradient (through the output and the batch
    statistics that update the running averages) against central differences of a
    float64 NumPy BatchNorm."""
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2)) * 2 + 1
    r = jax.random.normal(jax.random.key(1), x.shape)
    scale = jnp.array([0.7, -1.3])
    bias = jnp.array([0.2, 0.5])

    def loss(x, scale, bias):
        y, mean, var = ops._batch_norm_train(x, 1e-5, scale, bias)
        return jnp.sum(y * r) + 3 * jnp.sum(mean) + 2 * jnp.sum(var)

    got = jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias)
    rr = np.asarray(r, np.float64)

    def np_loss(x, scale, bias):
        mean = x.mean((0, 1, 2))
        var = ((x - mean) ** 2).mean((0, 1, 2))
        y = (x - mean) / np.sqrt(var + 1e-5) * scale + bias
        return (y * rr).sum() + 3 * mean.sum() + 2 * var.sum()

    args = [np.asarray(a, np.float64) for a in (x, scale, bias)]
    for n, g in enumerate(got):
        num = np.zeros_like(args[n])
        for idx in np.ndindex(num.shape):
            hi = [a.copy() for a in args]
            lo = [a.copy() for a in args]
            hi[n][idx] += 1e-6
            lo[n][idx] -= 1e-6
            num[idx] = (np_loss(*hi) - np_loss(*lo)) / 2e-6
        np.testing.assert_allclose(np.asarray(g), num, rtol=1e-4, atol=1e-4)


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
    assert ops.resolve_impl("auto") == (
        "fused" if jax.default_backend() == "cpu" else "xla"
    )
    assert ops.resolve_impl("fused") == "fused"
    with pytest.raises(ValueError, match="'fused'"):
        ops.resolve_impl("winograd")


@pytest.mark.parametrize("mod", [ops.ReLUConvBN(6), ops.FactorizedReduce(6)])
def test_rectified_input_gives_the_same_output_codes_and_gradient(mod):
    """A preprocessing op told that its input is already ``relu(x)`` (the supernet
    rectifies cell states once) equals the op on ``x``: output, recorded codes'
    signs and input gradient, bit for bit; it applies no ReLU of its own."""
    x = jax.random.normal(jax.random.key(5), (2, 8, 8, 4))
    variables = mod.init(jax.random.key(0), x)
    fast = mod.clone(rectified=True)

    def plain(x):
        codes = []
        return mod.apply(variables, x, True, codes), codes

    def rect(x):
        codes = []
        return fast.apply(variables, jax.nn.relu(x), True, codes), codes

    (y0, c0), (y1, c1) = plain(x), rect(x)
    np.testing.assert_array_equal(np.asarray(y0), np.asarray(y1))
    assert len(c0) == len(c1) == 1
    np.testing.assert_array_equal(np.asarray(c0[0] > 0), np.asarray(c1[0] > 0))
    assert float(jnp.min(c1[0])) == 0.0  # the recorded input is the rectified one
    g0 = jax.grad(lambda x: jnp.sum(plain(x)[0] ** 2))(x)
    g1 = jax.grad(lambda x: jnp.sum(rect(x)[0] ** 2))(x)
    np.testing.assert_array_equal(np.asarray(g0), np.asarray(g1))
    # on a raw input the rectified op differs: it really skips its ReLU
    assert not np.array_equal(
        np.asarray(fast.apply(variables, x, True)), np.asarray(y0)
    )
