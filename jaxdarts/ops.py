"""Candidate operations of DARTS-style cells, NHWC, as Flax Linen modules.

Every op is called as ``op(x, train, codes)``:

* ``x``: ``[B, H, W, C]`` input.
* ``train``: BatchNorm uses batch statistics when True (and updates the running
  statistics when the ``batch_stats`` collection is mutable), running statistics when
  False. BatchNorm follows PyTorch (eps 1e-5, momentum 0.1, unbiased running variance).
* ``codes``: ``None``, or a Python list to which every ReLU appends its *input* (the
  tensor whose sign pattern is the NWOT binary code, the reference implementation).

Depthwise convolutions and pools have four exact implementations: XLA's native
convolution / ``reduce_window`` (``impl="xla"``), sums of shifted, strided slices
unrolled over the taps (``impl="shift"``), the same sums in a ``fori_loop`` over the
taps (``impl="loop"``), and ``impl="fused"``: the shifted sums forward (XLA fuses all
taps into one pass over the input) with closed-form gradients (a custom VJP: the
input gradient is the transposed shifted sum, again one pass; the depthwise kernel's
is one reduction per tap; a max pool's gradient goes to the first maximum of each
window, as in PyTorch). XLA:CPU runs grouped convolutions 30-150x slower than the
shifted form. ``"auto"`` is ``fused`` on CPU and ``xla`` elsewhere. Measured on
XLA:CPU (2 cores, random discrete architectures of the paper's 8-cell supernet, C=16,
batch 64, 32x32): ``fused`` computes a discrete NWOT reward 1.7x faster than
``loop``, and the dense training step at C=8, 5 cells, batch 32 about 3x faster,
with compile times no longer than ``loop``'s.

Train-mode BatchNorm is differentiated in closed form too (two reductions per
channel; autodiff of the same expression runs several times slower on XLA:CPU).

References:
  Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019 (operations.py).
  Zela et al., "Understanding and Robustifying DARTS", ICLR 2020 (noise op).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "OPS",
    "make_op",
    "BatchNorm",
    "FactorizedReduce",
    "ReLUConvBN",
    "resolve_impl",
]

Codes = list | None

# PyTorch's default conv/linear init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def resolve_impl(impl: str) -> str:
    """Maps ``auto`` to ``fused`` on CPU and ``xla`` on other backends."""
    if impl == "auto":
        return "fused" if jax.default_backend() == "cpu" else "xla"
    if impl not in ("shift", "xla", "loop", "fused"):
        raise ValueError(
            f"op impl must be 'auto', 'shift', 'loop', 'fused' or 'xla', got {impl!r}"
        )
    return impl


def _transposed_taps(g, k: int, stride: int, dilation: int, padded_hw, fill=0):
    """Yields ``(t, window)`` for the adjoint of reading a window's k*k taps.

    The forward pass read tap ``t = i * k + j`` of output ``(h, w)`` at padded input
    ``(h * stride + i * dilation, w * stride + j * dilation)``. Here ``g`` (``[B, Ho,
    Wo, C]``, an output-shaped array) is spread by the stride and padded by the
    window's span, so that ``window`` (``[B, Hp, Wp, C]``) holds, at every padded
    input position, the entry of ``g`` whose tap ``t`` read it (``fill`` where none
    did). Summing per-tap terms of the windows is one fused pass over memory.
    """
    hp, wp = padded_hw
    b, ho, wo, c = g.shape
    span = (k - 1) * dilation
    cfg = [
        (0, 0, 0),
        (span, hp - (ho - 1) * stride - 1, stride - 1),
        (span, wp - (wo - 1) * stride - 1, stride - 1),
        (0, 0, 0),
    ]
    gd = lax.pad(g, jnp.asarray(fill, g.dtype), cfg)
    for i in range(k):
        for j in range(k):
            start = (0, span - i * dilation, span - j * dilation, 0)
            stop = (b, start[1] + hp, start[2] + wp, c)
            yield i * k + j, lax.slice(gd, start, stop)


def _channel_sums(terms: list[jax.Array]) -> list[jax.Array]:
    """Per-channel sums of same-shaped ``[..., C]`` arrays, one ``[C]`` each.

    One variadic reduction: XLA:CPU fuses every term's producer (a shifted slice
    times a gradient) into a single pass over memory, where a reduction per term
    copies its operand out first (2.5-4x faster for a depthwise kernel's gradient).
    """
    axes = tuple(range(terms[0].ndim - 1))
    zeros = tuple(np.zeros((), t.dtype) for t in terms)

    def add(a, b):
        return tuple(u + v for u, v in zip(a, b, strict=True))

    return list(lax.reduce(tuple(terms), zeros, add, axes))


def _unpad(xp: jax.Array, pad: int) -> jax.Array:
    return xp[:, pad : xp.shape[1] - pad, pad : xp.shape[2] - pad]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_fused(x, kernel, stride: int, pad: int, dilation: int):
    return depthwise_conv(x, kernel, stride, pad, dilation, "shift")


def _depthwise_fused_fwd(x, kernel, stride, pad, dilation):
    return depthwise_conv(x, kernel, stride, pad, dilation, "shift"), (x, kernel)


def _depthwise_fused_bwd(stride, pad, dilation, res, g):
    # d/dx: each tap's output gradient times its weight, put back where it was read;
    # d/dkernel: per tap, the sum over batch and space of input window * gradient.
    x, kernel = res
    k = kernel.shape[0]
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = g.shape[1], g.shape[2]
    products = [s * g for _, _, s in _shifted(xp, k, stride, dilation, ho, wo)]
    dk = jnp.stack(_channel_sums(products))
    dxp = sum(
        win * kernel[t // k, t % k]
        for t, win in _transposed_taps(g, k, stride, dilation, xp.shape[1:3])
    )
    return _unpad(dxp, pad), dk.reshape(kernel.shape)


_depthwise_fused.defvjp(_depthwise_fused_fwd, _depthwise_fused_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_fused(x, stride: int):
    return max_pool(x, stride, "shift")


def _max_pool_fused_fwd(x, stride):
    y = max_pool(x, stride, "shift")
    return y, (x, y)


def _max_pool_fused_bwd(stride, res, g):
    # The gradient goes to the first window element equal to the maximum (PyTorch).
    x, y = res
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    first = jnp.full(y.shape, 9, jnp.int32)  # the first tap holding the maximum
    for i, j, s in reversed(list(_shifted(xp, 3, stride, 1, y.shape[1], y.shape[2]))):
        first = jnp.where(s == y, 3 * i + j, first)
    hw = xp.shape[1:3]
    zero = jnp.zeros((), g.dtype)
    dxp = sum(
        jnp.where(tap == t, win, zero)
        for (t, win), (_, tap) in zip(
            _transposed_taps(g, 3, stride, 1, hw),
            _transposed_taps(first, 3, stride, 1, hw, fill=-1),
            strict=True,
        )
    )
    return (_unpad(dxp, 1),)


_max_pool_fused.defvjp(_max_pool_fused_fwd, _max_pool_fused_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _window_sum_fused(x, stride: int):
    return _window_sum(x, stride)


def _window_sum(x, stride):
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho, wo = _out_size(x.shape[1], 3, stride, 1), _out_size(x.shape[2], 3, stride, 1)
    total = None
    for _, _, s in _shifted(xp, 3, stride, 1, ho, wo):
        total = s if total is None else total + s
    return total


def _window_sum_fused_fwd(x, stride):
    return _window_sum(x, stride), x.shape


def _window_sum_fused_bwd(stride, shape, g):
    hw = (shape[1] + 2, shape[2] + 2)
    return (_unpad(sum(w for _, w in _transposed_taps(g, 3, stride, 1, hw)), 1),)


_window_sum_fused.defvjp(_window_sum_fused_fwd, _window_sum_fused_bwd)


def relu(x: jax.Array, codes: Codes, rectified: bool = False) -> jax.Array:
    """ReLU that records its input for the NWOT kernel when ``codes`` is a list.

    ``rectified``: ``x`` is already ``relu(raw)``; it is returned as it is and
    recorded in place of ``raw`` (the same codes: ``relu(raw) > 0`` iff ``raw > 0``).
    """
    if codes is not None:
        codes.append(x)
    return x if rectified else jax.nn.relu(x)


def _out_size(n: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _shifted(xp: jax.Array, k: int, stride: int, dilation: int, ho: int, wo: int):
    """Yields ``(i, j, slice)`` for the k*k taps of a window over padded ``xp``."""
    b, _, _, c = xp.shape
    for i in range(k):
        for j in range(k):
            start = (0, i * dilation, j * dilation, 0)
            limit = (
                b,
                start[1] + (ho - 1) * stride + 1,
                start[2] + (wo - 1) * stride + 1,
                c,
            )
            yield i, j, lax.slice(xp, start, limit, (1, stride, stride, 1))


def _window_loop(xp, k, stride, dilation, ho, wo, combine, init, weights=None):
    """Folds the k*k taps of a window with ``combine`` in a loop (one traced tap)."""
    b, _, _, c = xp.shape
    size = (b, (ho - 1) * stride + 1, (wo - 1) * stride + 1, c)

    def tap(t, acc):
        i, j = t // k, t % k
        win = lax.dynamic_slice(xp, (0, i * dilation, j * dilation, 0), size)
        win = win[:, ::stride, ::stride]
        if weights is not None:
            win = win * weights[i, j]
        return combine(acc, win)

    return lax.fori_loop(0, k * k, tap, jnp.full((b, ho, wo, c), init, xp.dtype))


def depthwise_conv(x, kernel, stride: int, pad: int, dilation: int, impl: str):
    """Depthwise conv. ``x [B,H,W,C]``, ``kernel [k,k,C]`` -> ``[B,Ho,Wo,C]``."""
    k = kernel.shape[0]
    if resolve_impl(impl) == "fused":
        return _depthwise_fused(x, kernel, stride, pad, dilation)
    if resolve_impl(impl) == "xla":
        return lax.conv_general_dilated(
            x,
            kernel[:, :, None, :],
            (stride, stride),
            [(pad, pad), (pad, pad)],
            rhs_dilation=(dilation, dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=x.shape[-1],
        )
    ho = _out_size(x.shape[1], k, stride, pad, dilation)
    wo = _out_size(x.shape[2], k, stride, pad, dilation)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    if resolve_impl(impl) == "loop":
        # One traced tap in a loop: a small program (fast compiles), same arithmetic.
        return _window_loop(xp, k, stride, dilation, ho, wo, jnp.add, 0.0, kernel)
    out = None
    for i, j, s in _shifted(xp, k, stride, dilation, ho, wo):
        term = s * kernel[i, j]
        out = term if out is None else out + term
    return out


def max_pool(x, stride: int, impl: str):
    """3x3 max pool, padding 1 (padding never wins)."""
    if resolve_impl(impl) == "fused":
        return _max_pool_fused(x, stride)
    if resolve_impl(impl) == "xla":
        return lax.reduce_window(
            x,
            -jnp.inf,
            lax.max,
            (1, 3, 3, 1),
            (1, stride, stride, 1),
            [(0, 0), (1, 1), (1, 1), (0, 0)],
        )
    ho, wo = _out_size(x.shape[1], 3, stride, 1), _out_size(x.shape[2], 3, stride, 1)
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    if resolve_impl(impl) == "loop":
        return _window_loop(xp, 3, stride, 1, ho, wo, jnp.maximum, -jnp.inf)
    out = None
    for _, _, s in _shifted(xp, 3, stride, 1, ho, wo):
        out = s if out is None else jnp.maximum(out, s)
    return out


def avg_pool(x, stride: int, impl: str):
    """3x3 average pool, padding 1, padded cells excluded from the count."""
    h, w = x.shape[1], x.shape[2]
    ho, wo = _out_size(h, 3, stride, 1), _out_size(w, 3, stride, 1)
    ones = np.pad(np.ones((h, w), np.float32), 1)
    count = sum(
        ones[
            i : i + (ho - 1) * stride + 1 : stride,
            j : j + (wo - 1) * stride + 1 : stride,
        ]
        for i in range(3)
        for j in range(3)
    )
    count = jnp.asarray(count[None, :, :, None], x.dtype)
    if resolve_impl(impl) == "fused":
        return _window_sum_fused(x, stride) / count
    if resolve_impl(impl) == "xla":
        total = lax.reduce_window(
            x,
            0.0,
            lax.add,
            (1, 3, 3, 1),
            (1, stride, stride, 1),
            [(0, 0), (1, 1), (1, 1), (0, 0)],
        )
        return total / count
    if resolve_impl(impl) == "loop":
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return _window_loop(xp, 3, stride, 1, ho, wo, jnp.add, 0.0) / count
    return _window_sum(x, stride) / count


class BatchNorm(nn.Module):
    """BatchNorm over all but the last axis, with PyTorch's conventions."""

    affine: bool = True
    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        ra_mean = self.variable(
            "batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32)
        )
        ra_var = self.variable(
            "batch_stats", "var", lambda: jnp.ones((c,), jnp.float32)
        )
        if self.affine:
            scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
            bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        if train:
            affine = (scale, bias) if self.affine else ()
            y, mean, var = _batch_norm_train(x, self.epsilon, *affine)
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                n = x.size // c
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
            return y
        mean, var = ra_mean.value, ra_var.value
        y = (x - mean.astype(x.dtype)) * lax.rsqrt(var + self.epsilon).astype(x.dtype)
        if self.affine:
            y = y * scale.astype(x.dtype) + bias.astype(x.dtype)
        return y


def _batch_norm_train(x, epsilon: float, scale=None, bias=None):
    """Train-mode BatchNorm: ``(y, batch mean, biased batch variance)``.

    Differentiated with the closed-form gradient (two reductions per channel), which
    XLA:CPU runs several times faster than the autodiff of the same expression.
    Without ``scale``/``bias`` (non-affine) the normalised input is returned.
    """
    affine = scale is not None
    if not affine:
        c = x.shape[-1]
        scale, bias = jnp.ones((c,), jnp.float32), jnp.zeros((c,), jnp.float32)
    return _bn_train(x, scale, bias, epsilon, affine)


def _bn_forward(x, scale, bias, epsilon, affine):
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.float32)
    mean = xf.mean(axes)
    xc = xf - mean
    var = jnp.square(xc).mean(axes)
    inv = lax.rsqrt(var + epsilon)
    y = (x - mean.astype(x.dtype)) * inv.astype(x.dtype)
    if affine:
        y = y * scale.astype(x.dtype) + bias.astype(x.dtype)
    return (y, mean, var), (xc, inv, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bn_train(x, scale, bias, epsilon, affine):
    return _bn_forward(x, scale, bias, epsilon, affine)[0]


def _bn_train_fwd(x, scale, bias, epsilon, affine):
    return _bn_forward(x, scale, bias, epsilon, affine)


def _bn_train_bwd(epsilon, affine, res, cots):
    xc, inv, scale = res
    dy, dmean, dvar = cots
    n = xc.size // xc.shape[-1]
    dyf = dy.astype(jnp.float32)
    xhat = xc * inv
    dbias, dscale = _channel_sums([dyf, dyf * xhat])
    s = scale if affine else jnp.ones_like(scale)
    dx = inv * s * (dyf - dbias / n - xhat * (dscale / n))
    dx = dx + dmean / n + dvar * (2.0 / n) * xc
    return dx.astype(dy.dtype), dscale, dbias


_bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


class Pointwise(nn.Module):
    """1x1 convolution without bias as a matmul."""

    features: int

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", torch_init, (x.shape[-1], self.features), jnp.float32)
        return jnp.einsum("bhwc,cd->bhwd", x, w.astype(x.dtype))


class Conv(nn.Module):
    """k x k convolution without bias (stem, conv_3x3)."""

    features: int
    kernel: int
    stride: int = 1
    pad: int = 0

    @nn.compact
    def __call__(self, x):
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        w = self.param("kernel", torch_init, shape, jnp.float32)
        if self.kernel == 1:
            x = x[:, :: self.stride, :: self.stride]
            return jnp.einsum("bhwc,cd->bhwd", x, w[0, 0].astype(x.dtype))
        return lax.conv_general_dilated(
            x,
            w.astype(x.dtype),
            (self.stride, self.stride),
            [(self.pad, self.pad)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


class ReLUConvBN(nn.Module):
    """ReLU -> conv k x k -> BN (preprocessing, conv_1x1, conv_3x3).

    ``rectified``: the caller passes ``relu(x)`` instead of ``x`` (same result and
    codes; see :func:`relu`).
    """

    features: int
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    affine: bool = True
    rectified: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        x = relu(x, codes, self.rectified)
        x = Conv(self.features, self.kernel, self.stride, self.pad)(x)
        return BatchNorm(self.affine)(x, train)


class DilConv(nn.Module):
    """ReLU -> depthwise k x k (dilation d) -> pointwise 1x1 -> BN."""

    features: int
    kernel: int
    stride: int
    pad: int
    dilation: int
    affine: bool = True
    impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        x = relu(x, codes)
        dw = self.param(
            "depthwise",
            nn.initializers.variance_scaling(
                1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1), out_axis=2
            ),
            (self.kernel, self.kernel, x.shape[-1]),
            jnp.float32,
        )
        x = depthwise_conv(
            x, dw.astype(x.dtype), self.stride, self.pad, self.dilation, self.impl
        )
        x = Pointwise(self.features)(x)
        return BatchNorm(self.affine)(x, train)


class SepConv(nn.Module):
    """Two DilConv blocks with dilation 1; only the first is strided."""

    features: int
    kernel: int
    stride: int
    pad: int
    affine: bool = True
    impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        c_in = x.shape[-1]
        x = DilConv(
            c_in, self.kernel, self.stride, self.pad, 1, self.affine, self.impl
        )(x, train, codes)
        return DilConv(
            self.features, self.kernel, 1, self.pad, 1, self.affine, self.impl
        )(x, train, codes)


class FactorizedReduce(nn.Module):
    """ReLU -> two offset 1x1 stride-2 convs (C/2 each), concatenated -> BN.

    ``rectified`` as in :class:`ReLUConvBN`.
    """

    features: int
    affine: bool = True
    rectified: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        if self.features % 2:
            raise ValueError(
                f"FactorizedReduce needs an even channel count, got {self.features}"
            )
        x = relu(x, codes, self.rectified)
        a = Pointwise(self.features // 2)(x[:, ::2, ::2])
        b = Pointwise(self.features // 2)(x[:, 1::2, 1::2])
        if a.shape != b.shape:
            raise ValueError(
                f"FactorizedReduce needs even spatial sizes, got {x.shape[1]}x{x.shape[2]}"
            )
        return BatchNorm(self.affine)(jnp.concatenate([a, b], axis=-1), train)


class Identity(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        return x


class Zero(nn.Module):
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        return jnp.zeros_like(x[:, :: self.stride, :: self.stride])


class Noise(nn.Module):
    """Fresh N(0, 1) of the (subsampled) input's shape, independent of the input.

    Draws from the ``noise`` RNG stream (``apply(..., rngs={"noise": key})``).
    """

    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        shape = x[:, :: self.stride, :: self.stride].shape
        return jax.random.normal(self.make_rng("noise"), shape, x.dtype)


class Pool(nn.Module):
    """3x3 max or average pool, optionally followed by BN without affine."""

    kind: str
    stride: int = 1
    bn: bool = True
    impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        fn = max_pool if self.kind == "max" else avg_pool
        x = fn(x, self.stride, self.impl)
        return BatchNorm(affine=False)(x, train) if self.bn else x


OpFactory = Callable[..., nn.Module]

#: name -> factory(C, stride, affine, impl, bn_after_pool) returning a Linen module.
OPS: dict[str, OpFactory] = {
    "none": lambda c, s, affine, impl, bn: Zero(s),
    "noise": lambda c, s, affine, impl, bn: Noise(s),
    "skip_connect": lambda c, s, affine, impl, bn: (
        Identity() if s == 1 else FactorizedReduce(c, affine)
    ),
    "max_pool_3x3": lambda c, s, affine, impl, bn: Pool("max", s, bn, impl),
    "avg_pool_3x3": lambda c, s, affine, impl, bn: Pool("avg", s, bn, impl),
    "sep_conv_3x3": lambda c, s, affine, impl, bn: SepConv(c, 3, s, 1, affine, impl),
    "sep_conv_5x5": lambda c, s, affine, impl, bn: SepConv(c, 5, s, 2, affine, impl),
    "dil_conv_3x3": lambda c, s, affine, impl, bn: DilConv(c, 3, s, 2, 2, affine, impl),
    "dil_conv_5x5": lambda c, s, affine, impl, bn: DilConv(c, 5, s, 4, 2, affine, impl),
    "conv_1x1": lambda c, s, affine, impl, bn: ReLUConvBN(c, 1, s, 0, affine),
    "conv_3x3": lambda c, s, affine, impl, bn: ReLUConvBN(c, 3, s, 1, affine),
}


def make_op(
    name: str,
    channels: int,
    stride: int,
    affine: bool = False,
    impl: str = "auto",
    bn_after_pool: bool = True,
) -> nn.Module:
    """Builds op ``name`` for ``channels`` channels at ``stride`` (1 or 2).

    Raises:
      ValueError: for an unknown op name (the message lists the known ones) or a
        stride other than 1 and 2.
    """
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; known ops are {sorted(OPS)}")
    if stride not in (1, 2):
        raise ValueError(f"op stride must be 1 or 2, got {stride}")
    return OPS[name](channels, stride, affine, impl, bn_after_pool)


def param_count(tree: Any) -> int:
    """Number of scalars in a pytree of arrays."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
