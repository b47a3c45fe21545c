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
taps (``impl="loop"``), and ``impl="fused"``: the shifted sums when evaluated (XLA
fuses all taps into one pass over the input), the loop form when differentiated (a
custom VJP, so gradients and their compile times are the loop form's). XLA:CPU runs
grouped convolutions 30-150x slower than the shifted form. Measured on XLA:CPU (2
shared cores, C=16, batch 64, 32x32): ``fused`` runs a sep_conv / dil_conv forward
2.3-4.4x and a max pool 30x faster than ``loop``, and a discrete NWOT reward of the
paper's 8-cell supernet about 2x faster, but that forward pass compiled 1.1-2.6x
slower (noisy measurements), so ``"auto"`` still picks ``loop`` on CPU (and ``xla``
elsewhere); pass ``impl="fused"`` where run time matters more than compiles.

References:
  Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019 (operations.py).
  Zela et al., "Understanding and Robustifying DARTS", ICLR 2020 (noise op).
"""

from __future__ import annotations

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
    """Maps ``auto`` to ``loop`` on CPU and ``xla`` on other backends."""
    if impl == "auto":
        return "loop" if jax.default_backend() == "cpu" else "xla"
    if impl not in ("shift", "xla", "loop", "fused"):
        raise ValueError(
            f"op impl must be 'auto', 'shift', 'loop', 'fused' or 'xla', got {impl!r}"
        )
    return impl


def _shift_forward_loop_gradient(fn: Callable, *args: jax.Array) -> jax.Array:
    """``fn(*args, impl="shift")``, differentiated as ``fn(*args, impl="loop")``.

    Evaluated without differentiation it is the unrolled shifted sum (one fused pass
    over memory). Under differentiation the forward and backward passes are exactly
    the loop form's (same values, residuals and gradients), whose gradient program
    compiles several times faster than the unrolled one's. Both forms sum the same
    taps in the same order and agree to float rounding.
    """

    @jax.custom_vjp
    def f(*a):
        return fn(*a, impl="shift")

    def fwd(*a):
        # The vjp function is a pytree (a jax.tree_util.Partial): a valid residual.
        return jax.vjp(lambda *b: fn(*b, impl="loop"), *a)

    def bwd(vjp, g):
        return vjp(g)

    f.defvjp(fwd, bwd)
    return f(*args)


def relu(x: jax.Array, codes: Codes) -> jax.Array:
    """ReLU that records its input for the NWOT kernel when ``codes`` is a list."""
    if codes is not None:
        codes.append(x)
    return jax.nn.relu(x)


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
        return _shift_forward_loop_gradient(
            lambda a, b, impl: depthwise_conv(a, b, stride, pad, dilation, impl),
            x,
            kernel,
        )
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
        return _shift_forward_loop_gradient(
            lambda a, impl: max_pool(a, stride, impl), x
        )
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
        return _shift_forward_loop_gradient(
            lambda a, impl: avg_pool(a, stride, impl), x
        )
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
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    if resolve_impl(impl) == "loop":
        return _window_loop(xp, 3, stride, 1, ho, wo, jnp.add, 0.0) / count
    total = None
    for _, _, s in _shifted(xp, 3, stride, 1, ho, wo):
        total = s if total is None else total + s
    return total / count


class BatchNorm(nn.Module):
    """BatchNorm over all but the last axis, with PyTorch's conventions."""

    affine: bool = True
    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        axes = tuple(range(x.ndim - 1))
        ra_mean = self.variable(
            "batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32)
        )
        ra_var = self.variable(
            "batch_stats", "var", lambda: jnp.ones((c,), jnp.float32)
        )
        if train:
            xf = x.astype(jnp.float32)
            mean = xf.mean(axes)
            var = jnp.square(xf - mean).mean(axes)
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                n = x.size // c
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean.astype(x.dtype)) * lax.rsqrt(var + self.epsilon).astype(x.dtype)
        if self.affine:
            scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
            bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
            y = y * scale.astype(x.dtype) + bias.astype(x.dtype)
        return y


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
    """ReLU -> conv k x k -> BN (preprocessing, conv_1x1, conv_3x3)."""

    features: int
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    affine: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        x = relu(x, codes)
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
    """ReLU -> two offset 1x1 stride-2 convs (C/2 each), concatenated -> BN."""

    features: int
    affine: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False, codes: Codes = None):
        if self.features % 2:
            raise ValueError(
                f"FactorizedReduce needs an even channel count, got {self.features}"
            )
        x = relu(x, codes)
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
