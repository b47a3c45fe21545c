"""The evaluation network: a discrete DARTS network compiled from a genotype.

NHWC, Flax Linen, functional: ``variables = model.init(rngs, x)`` then
``model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=...)``.
The layout follows DARTS' ``NetworkCIFAR`` as the reference uses it
(the reference implementation; docs/semantics.md):

* stem: conv 3x3 (``C_in -> 3C``, no bias) + BatchNorm (affine);
* ``layers`` cells, reduction cells (stride 2, channels doubled) at ``layers // 3``
  and ``2 * layers // 3``;
* each cell: ``preproc0`` = FactorizedReduce if the previous cell reduced, else
  ReLU-conv1x1-BN; ``preproc1`` = ReLU-conv1x1-BN (all affine); node ``i`` sums the
  genotype's two ops applied to their input states; the output concatenates the
  genotype's concat states;
* every pool is followed by BatchNorm(affine=False), as in the reference
  (``augment.py``), not in DARTS;
* global average pool + linear classifier (PyTorch ``Linear`` init).

Regularisers, all active only when ``train=True``:

* ``identity_dropout``: dropout after every stride-1 ``skip_connect`` (the
  reference's P-DARTS-style dropout, rate 0.2 by default; RNG stream ``dropout``);
* drop-path (DARTS): every non-identity op output is zeroed per sample with
  probability ``p`` and scaled by ``1 / (1 - p)`` (RNG stream ``drop_path``);
* the auxiliary head (DARTS ``AuxiliaryHeadCIFAR``) after cell ``2 * layers // 3``:
  the model then returns ``(logits, aux_logits)``.

The S4 ``noise`` op draws from the RNG stream ``noise`` (in both modes).

Images of any size work as long as every reduction sees an even spatial size (e.g.
8x8, 16x16, 28x28, 32x32) and any channel count. ``dtype=jnp.bfloat16`` computes in
bfloat16 with float32 parameters, BatchNorm statistics and logits.

References:
  Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019 (model.py).
  Chen et al., "Progressive DARTS", ICCV 2019 (dropout after skip connections).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdarts.genotypes import Genotype, validate_genotype
from jaxdarts.ops import BatchNorm, Conv, FactorizedReduce, ReLUConvBN, make_op

__all__ = ["EvalNet", "AuxiliaryHead", "drop_path", "num_params", "torch_default_init"]

# PyTorch's default conv/linear weight init: U(+-1/sqrt(fan_in)).
_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def drop_path(key: jax.Array, x: jax.Array, prob: float | jax.Array) -> jax.Array:
    """DARTS drop-path: zeroes whole samples with probability ``prob``.

    Args:
      key: PRNG key.
      x: ``[B, H, W, C]`` op output.
      prob: drop probability in ``[0, 1)`` (a Python float or a traced scalar).

    Returns:
      ``[B, H, W, C]``: ``x * mask / (1 - prob)`` with ``mask ~ Bernoulli(1 - prob)``
      per sample.
    """
    keep = 1.0 - jnp.asarray(prob, jnp.float32)
    mask = jax.random.bernoulli(key, keep, (x.shape[0], 1, 1, 1))
    return x * (mask / keep).astype(x.dtype)


def _adaptive_avg_pool(x: jax.Array, out: int) -> jax.Array:
    """PyTorch ``AdaptiveAvgPool2d(out)``: ``[B, H, W, C] -> [B, out, out, C]``."""
    h, w = x.shape[1], x.shape[2]

    def bins(n):
        return [(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]

    rows = [
        jnp.stack([x[:, a:b, c:d].mean((1, 2)) for c, d in bins(w)], axis=1)
        for a, b in bins(h)
    ]
    return jnp.stack(rows, axis=1)


class AuxiliaryHead(nn.Module):
    """DARTS ``AuxiliaryHeadCIFAR``: ReLU, avg-pool 5 stride 3, conv1x1->128, BN,
    ReLU, conv2x2->768, BN, ReLU, linear.

    On 32x32 CIFAR the head sees an 8x8 map, which the 5x5 / stride-3 pool (no
    padding) turns into 2x2 and the 2x2 conv into 1x1. For other map sizes that pool
    would not give 2x2 (smaller than 5x5 it is undefined; larger than 10x10 the
    reference would fail at its linear layer), so the head then uses PyTorch's
    adaptive average pooling to 2x2 instead. Maps of 8 to 10 pixels a side use the
    reference pool exactly. The parameters are the same either way.
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Args: ``x [B, H, W, C]``, ``H, W >= 2``. Returns ``[B, num_classes]``."""
        x = jax.nn.relu(x)
        h, w = x.shape[1], x.shape[2]
        if h < 2 or w < 2:
            raise ValueError(
                f"the auxiliary head needs a map of at least 2x2, got {h}x{w}"
            )
        if 8 <= h <= 10 and 8 <= w <= 10:
            # AvgPool2d(5, stride=3, padding=0): no padding, so a plain window mean.
            x = nn.avg_pool(x, (5, 5), strides=(3, 3), padding="VALID")
        else:
            x = _adaptive_avg_pool(x, 2)
        x = Conv(128, 1)(x)
        x = jax.nn.relu(BatchNorm()(x, train))
        x = Conv(768, 2)(x)  # [B, 1, 1, 768]
        x = jax.nn.relu(BatchNorm()(x, train))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(
            self.num_classes,
            kernel_init=_torch_kernel_init,
            bias_init=_torch_bias_init(x.shape[-1]),
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )(x)


class _Edge(nn.Module):
    """Names one genotype op ``op{k}`` in the parameter tree."""

    op: str
    channels: int
    stride: int
    impl: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        op = make_op(self.op, self.channels, self.stride, affine=True, impl=self.impl)
        return op(x, train)


class EvalCell(nn.Module):
    """One discrete cell: ``s0 [B,H,W,Cpp], s1 [B,H',W',Cp] -> [B,h,w,n*C]``.

    ``n = len(concat)``; ``h, w`` are ``H', W'`` halved in a reduction cell.
    """

    pairs: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]
    channels: int
    reduce: bool
    reduce_prev: bool
    identity_dropout: float = 0.0
    impl: str = "auto"

    @nn.compact
    def __call__(
        self,
        s0: jax.Array,
        s1: jax.Array,
        train: bool,
        drop_prob: float | jax.Array = 0.0,
    ) -> jax.Array:
        c = self.channels
        if self.reduce_prev:
            s0 = FactorizedReduce(c, affine=True, name="preproc0")(s0, train)
        else:
            s0 = ReLUConvBN(c, 1, 1, 0, affine=True, name="preproc0")(s0, train)
        s1 = ReLUConvBN(c, 1, 1, 0, affine=True, name="preproc1")(s1, train)
        use_drop_path = train and not (
            isinstance(drop_prob, (int, float)) and drop_prob == 0
        )
        states = [s0, s1]
        for node in range(len(self.pairs) // 2):
            total = None
            for k in (2 * node, 2 * node + 1):
                name, idx = self.pairs[k]
                stride = 2 if self.reduce and idx < 2 else 1
                h = _Edge(name, c, stride, self.impl, name=f"op{k}")(states[idx], train)
                identity = name == "skip_connect" and stride == 1
                if identity and self.identity_dropout > 0:
                    h = nn.Dropout(self.identity_dropout)(h, deterministic=not train)
                if not identity and use_drop_path:
                    h = drop_path(self.make_rng("drop_path"), h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return jnp.concatenate([states[i] for i in self.concat], axis=-1)


class EvalNet(nn.Module):
    """The evaluation network (DARTS ``NetworkCIFAR`` as in the reference).

    Attributes:
      genotype: the cells (a :class:`~jaxdarts.genotypes.Genotype`; validated).
      channels: initial cell channels ``C`` (the stem has ``3C``).
      layers: number of cells ``L``; reductions at ``L // 3`` and ``2L // 3``.
      num_classes: classifier outputs.
      auxiliary: add the auxiliary head after cell ``2L // 3`` (training only).
      drop_path: default drop-path probability (0 = off); ``__call__`` can override
        it per call (DARTS ramps it linearly over the epochs).
      identity_dropout: dropout rate after stride-1 skip connections (training only).
      impl: op implementation (``auto``, ``shift`` or ``xla``; see ``jaxdarts.ops``).
      dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); params stay float32.
    """

    genotype: Genotype
    channels: int = 36
    layers: int = 20
    num_classes: int = 10
    auxiliary: bool = False
    drop_path: float = 0.0
    identity_dropout: float = 0.2
    impl: str = "auto"
    dtype: Any = jnp.float32

    def __post_init__(self):
        g = self.genotype
        try:
            g = Genotype(
                tuple((str(o), int(i)) for o, i in g[0]),
                tuple(int(i) for i in g[1]),
                tuple((str(o), int(i)) for o, i in g[2]),
                tuple(int(i) for i in g[3]),
            )
        except (TypeError, ValueError, IndexError) as e:
            raise ValueError(
                f"EvalNet needs a Genotype, got {self.genotype!r}: {e}"
            ) from e
        validate_genotype(g)
        object.__setattr__(self, "genotype", g)
        if self.layers < 1 or self.channels < 1 or self.num_classes < 1:
            raise ValueError(
                "layers, channels and num_classes must be positive, got "
                f"{self.layers}, {self.channels}, {self.num_classes}"
            )
        if not 0.0 <= self.drop_path < 1.0 or not 0.0 <= self.identity_dropout < 1.0:
            raise ValueError(
                f"drop_path ({self.drop_path}) and identity_dropout "
                f"({self.identity_dropout}) must be in [0, 1)"
            )
        super().__post_init__()

    @property
    def reduction_cells(self) -> tuple[int, ...]:
        """Indices of the reduction cells."""
        return tuple(sorted({self.layers // 3, 2 * self.layers // 3}))

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        train: bool = False,
        drop_path_prob: float | jax.Array | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Classifies a batch.

        Args:
          x: ``[B, H, W, C_in]`` normalised images.
          train: batch statistics in BatchNorm (update them with
            ``mutable=["batch_stats"]``), dropout, drop-path and the auxiliary head.
          drop_path_prob: drop-path probability for this call (a float or a traced
            scalar); ``None`` uses ``self.drop_path``. Ignored when ``train`` is False.

        Returns:
          ``[B, num_classes]`` float32 logits, or ``(logits, aux_logits)`` (both
          ``[B, num_classes]``) when ``train`` and ``auxiliary``.
        """
        prob = self.drop_path if drop_path_prob is None else drop_path_prob
        g = self.genotype
        x = x.astype(self.dtype)
        c = self.channels
        x = Conv(3 * c, 3, 1, 1, name="stem_conv")(x)
        s0 = s1 = BatchNorm(affine=True, name="stem_bn")(x, train)
        reduce_prev = False
        aux_logits = None
        for i in range(self.layers):
            reduce = i in self.reduction_cells
            if reduce:
                c *= 2
            cell = EvalCell(
                pairs=g.reduce if reduce else g.normal,
                concat=g.reduce_concat if reduce else g.normal_concat,
                channels=c,
                reduce=reduce,
                reduce_prev=reduce_prev,
                identity_dropout=self.identity_dropout,
                impl=self.impl,
                name=f"cell{i}",
            )
            s0, s1 = s1, cell(s0, s1, train, prob)
            reduce_prev = reduce
            if i == 2 * self.layers // 3 and self.auxiliary:
                # Built at init even in eval mode, so that the variables always exist.
                if train or self.is_initializing():
                    aux = AuxiliaryHead(self.num_classes, self.dtype, name="aux_head")
                    aux_logits = aux(s1, train)
        out = s1.astype(jnp.float32).mean((1, 2)).astype(self.dtype)
        logits = nn.Dense(
            self.num_classes,
            kernel_init=_torch_kernel_init,
            bias_init=_torch_bias_init(out.shape[-1]),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="classifier",
        )(out).astype(jnp.float32)
        if train and self.auxiliary:
            return logits, aux_logits.astype(jnp.float32)
        return logits


def num_params(model: EvalNet, image_shape: tuple[int, int, int]) -> int:
    """Trainable parameter count (the ``params`` collection, as PyTorch counts).

    Uses ``jax.eval_shape``, so nothing is computed; includes the auxiliary head when
    ``model.auxiliary``.

    Args:
      model: the network.
      image_shape: ``(H, W, C_in)`` of one input image.
    """
    x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
    rngs = {k: jax.random.key(0) for k in ("params", "dropout", "drop_path", "noise")}
    shapes = jax.eval_shape(lambda x: model.init(rngs, x), x)
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(shapes["params"])))


def torch_default_init(abstract: Any, seed: int | Sequence[int]) -> Any:
    """PyTorch's default initialisation of a Linen parameter tree, drawn on the host.

    Equivalent to the Linen initialisers of :mod:`jaxdarts.ops` and
    :mod:`jaxdarts.evalnet` (PyTorch defaults), but drawn with NumPy: on XLA:CPU a
    jitted ``model.init`` spends most of its time compiling one threefry kernel per
    parameter (28 s for a 5-cell network here), this takes milliseconds.

    Rules, by leaf name: ``kernel`` / ``depthwise`` ``[..., fan_out]``:
    ``U(+-1/sqrt(fan_in))`` with ``fan_in = prod(shape[:-1])`` (conv, 1x1 conv,
    depthwise conv, linear); ``bias`` next to a ``kernel``: ``U(+-1/sqrt(fan_in))``
    (linear); ``scale`` / ``bias`` without a kernel: 1 / 0 (BatchNorm).

    Args:
      abstract: nested dict of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of
        ``model.init(...)["params"]``).
      seed: NumPy seed (an int or a sequence of ints, e.g. a JAX key's data).

    Returns:
      The same tree with float32 NumPy arrays.

    Raises:
      ValueError: a leaf name the rules do not cover.
    """
    rng = np.random.default_rng(seed)

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    def walk(node, path):
        out = {}
        kernel = node.get("kernel")
        for name in sorted(node):
            leaf = node[name]
            where = "/".join((*path, name))
            if isinstance(leaf, dict):
                out[name] = walk(leaf, (*path, name))
            elif name in ("kernel", "depthwise"):
                out[name] = uniform(leaf.shape, int(np.prod(leaf.shape[:-1])))
            elif name == "bias" and kernel is not None:
                out[name] = uniform(leaf.shape, int(np.prod(kernel.shape[:-1])))
            elif name == "bias":
                out[name] = np.zeros(leaf.shape, np.float32)
            elif name == "scale":
                out[name] = np.ones(leaf.shape, np.float32)
            else:
                raise ValueError(f"no host init rule for parameter {where}")
        return out

    return walk(abstract, ())
