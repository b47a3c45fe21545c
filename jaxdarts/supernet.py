"""The DARTS supernet as a pure function of its variables and architecture.

The architecture is an *input*, never a parameter: the forward pass takes per-edge op
weights (the softmax of the alphas, :meth:`Supernet.edge_weights`) for the dense path,
or one op index per edge for the discrete path, so the same weights can be vmapped
over many architectures, and the alphas can be differentiated through.

Layout (the reference implementation; docs/semantics.md): stem conv3x3 (C_in -> 3C) + BN; ``layers`` cells with
reductions (stride 2, doubled channels) at ``layers // 3`` and ``2 * layers // 3``;
global average pool; linear classifier. A cell preprocesses its two inputs (ReLU-Conv-BN
1x1, or FactorizedReduce after a reduction cell; affine BN as in the reference), then
each node sums the mixed ops on its incoming edges, and the cell outputs the
concatenation of its 4 nodes.

A cell's 14 edges run in a ``lax.scan`` (``edges="scan"``; a reduction cell scans its
stride-2 edges, then the others), its body tracing every op once: all of them,
weighted and rematerialised for the backward pass (dense), or one ``lax.switch``
(discrete); or unrolled in Python (``edges="unroll"``, discrete path: faster rewards,
longer compiles). Each op is one jitted function per module, traced once however many
edges run it. NWOT statistics of a cell state that several ops ReLU as their input
are computed once per cell and counted per op. A discrete edge's ``lax.switch``
branch computes only its op's output and adds its inner ReLUs' Gram matrix to one
accumulator; what is static per op (its ReLU counts) is picked after the switches.

Reference semantics (docs/semantics.md): ops whose softmax weight is <= ``eps`` (1e-3)
contribute nothing and their ReLUs are left out of the NWOT kernel; normal weights
drive normal cells unless ``swap_cells`` (``compat="dartsrl"``) reproduces the
reference's swap, where reduction cells use the normal weights and vice versa.

References:
  Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019.
  Mellor et al., "Neural Architecture Search without Training", ICML 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdarts import ops as ops_lib
from jaxdarts.spaces import (
    EDGE_INPUT,
    EDGE_NODE,
    NUM_EDGES,
    NUM_NODES,
    SearchSpace,
    get_space,
)

__all__ = ["SupernetConfig", "Supernet", "NwotStats", "EPS"]

#: Ops with softmax weight at or below this contribute nothing (reference MixedOp).
EPS = 1e-3

# Edges reading a cell input (stride 2 in reduction cells) and edges reading a node.
_IN_EDGES = tuple(e for e in range(NUM_EDGES) if EDGE_INPUT[e] < 2)
_MID_EDGES = tuple(e for e in range(NUM_EDGES) if EDGE_INPUT[e] >= 2)
_GROUPS = (("in", _IN_EDGES), ("mid", _MID_EDGES))
# (group, row) of each edge in its group's stacked variables.
_EDGE_POS = {
    e: (g, i) for g, (_, edges) in enumerate(_GROUPS) for i, e in enumerate(edges)
}
# Position of each edge in concat(in, mid): stacked parameters in edge order.
_EDGE_ORDER = np.argsort(np.array(_IN_EDGES + _MID_EDGES))


class NwotStats(NamedTuple):
    """Sufficient statistics of the NWOT kernel over the counted ReLUs.

    With binary codes ``c`` (``[B, N]``, 1 where a ReLU input is > 0) the kernel is
    ``K = c c^T + (1-c)(1-c)^T = n - h_i - h_j + 2 G`` (Mellor et al., Eq. 2).

    Attributes:
      gram: ``[B, B]`` int32, ``G = sum c c^T`` (units active in both samples).
      active: ``[B]`` int32, ``h = sum_u c`` (active units per sample).
      units: int32 scalar, ``n = N_A``, the number of counted units per sample.
    """

    gram: jax.Array
    active: jax.Array
    units: jax.Array

    @staticmethod
    def zeros(batch: int) -> NwotStats:
        return NwotStats(
            jnp.zeros((batch, batch), jnp.int32),
            jnp.zeros((batch,), jnp.int32),
            jnp.zeros((), jnp.int32),
        )

    def kernel(self) -> jax.Array:
        """``[B, B]`` int32 Hamming kernel ``K = N_A - d_H``."""
        h = self.active
        return self.units - h[:, None] - h[None, :] + 2 * self.gram

    def __add__(self, other):  # type: ignore[override]
        return NwotStats(*(a + b for a, b in zip(self, other, strict=True)))

    def scale(self, m: jax.Array) -> NwotStats:
        """Multiplies every statistic by the int count (or 0/1 mask) ``m``."""
        m = m.astype(jnp.int32)
        return NwotStats(self.gram * m, self.active * m, self.units * m)


#: Cell states an edge can read: the two preprocessed inputs, then nodes 0-3.
_NUM_STATES = 2 + NUM_NODES


class _EdgeStats(NamedTuple):
    """NWOT statistics of a cell's edges, with the ops' input codes left out.

    Every op whose first ReLU reads the op's input (the convolutions; a strided
    skip's FactorizedReduce) has its edge's input state as that code. A state read
    by several such ops has the same code each time, so its statistics are computed
    once per cell and counted ``reads[s]`` times (:meth:`Supernet._state_stats`).

    Attributes:
      codes: :class:`NwotStats` of the ops' other ReLUs (inside a separable conv).
      reads: ``[6]`` int32, per state (inputs 0-1, nodes 0-3), the number of ops that
        ReLU it as their input.
    """

    codes: NwotStats
    reads: jax.Array

    @staticmethod
    def zeros(batch: int) -> _EdgeStats:
        return _EdgeStats(NwotStats.zeros(batch), jnp.zeros((_NUM_STATES,), jnp.int32))

    def __add__(self, other):  # type: ignore[override]
        return _EdgeStats(self.codes + other.codes, self.reads + other.reads)

    def scale(self, m: jax.Array) -> _EdgeStats:
        return _EdgeStats(self.codes.scale(m), self.reads * m.astype(jnp.int32))


def _picked_stats(gram: jax.Array, picked: jax.Array, src: jax.Array) -> _EdgeStats:
    """A cell's edge statistics from the inner-ReLU Gram and the chosen ops' counts.

    Args:
      gram: ``[B, B]`` int32 Gram matrix of the chosen ops' inner ReLUs.
      picked: ``[E, 2]`` int32, per edge, its op's (ReLUs reading the edge input,
        inner units).
      src: ``[E]`` int32 cell state each edge reads.
    """
    onehot = (src[:, None] == jnp.arange(_NUM_STATES)).astype(jnp.int32)
    reads = (onehot * picked[:, :1]).sum(0)
    # h_i = G_ii, as in codes_to_stats.
    return _EdgeStats(NwotStats(gram, jnp.diagonal(gram), picked[:, 1].sum()), reads)


def _gram_matmul(c: jax.Array) -> jax.Array:
    # 0/1 float32 products at HIGHEST precision: exact below 2**24 units (checked).
    return jnp.dot(c, c.T, precision=lax.Precision.HIGHEST).astype(jnp.int32)


def _pack_codes(c: jax.Array) -> jax.Array:
    """``[B, N]`` bools -> ``[B, ceil(N / 32)]`` uint32 words (zero bits as padding).

    Unit ``k * W + m`` is bit ``k`` of word ``m``: the 32-way reduction then runs
    along the major axis and vectorises over the words.
    """
    b, n = c.shape
    words = -(-n // 32)
    bits = jnp.pad(c, ((0, 0), (0, 32 * words - n))).reshape(b, 32, words)
    shifts = jnp.arange(32, dtype=jnp.uint32)[:, None]
    return (bits.astype(jnp.uint32) << shifts).sum(1, dtype=jnp.uint32)


#: Words per step of the popcount Gram: ``B * B * chunk`` counts stay in cache.
_GRAM_ELEMS = 2**21


def _cross_words(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[Ba, W]``, ``[Bb, W]`` words -> ``[Ba, Bb]`` int32 ``sum popcount(a_i & b_j)``.

    The words run in chunks (a ``fori_loop`` when there are several) small enough
    that the ``[Ba, Bb, chunk]`` pair counts stay in cache; within a chunk, 32 words
    at a time are summed along a major axis in uint16 (at most 32 * 32 per sum),
    which XLA:CPU vectorises, and the rest in int32.
    """
    ba, bb, w = a.shape[0], b.shape[0], a.shape[1]
    cap = max(32, _GRAM_ELEMS // (ba * bb) // 32 * 32)
    steps = -(-w // cap)
    per_step = -(-w // steps)
    chunk = -(-per_step // 32) * 32
    pad = ((0, 0), (0, steps * chunk - w))
    a, b = jnp.pad(a, pad), jnp.pad(b, pad)

    def block(aw, bw):
        pc = lax.population_count(aw[:, None, :] & bw[None, :, :]).astype(jnp.uint16)
        pc = pc.reshape(ba, bb, 32, chunk // 32).sum(2, dtype=jnp.uint16)
        return pc.astype(jnp.int32).sum(-1)

    if steps == 1:
        return block(a, b)

    def step(i, acc):
        aw = lax.dynamic_slice_in_dim(a, i * chunk, chunk, axis=1)
        bw = lax.dynamic_slice_in_dim(b, i * chunk, chunk, axis=1)
        return acc + block(aw, bw)

    return lax.fori_loop(0, steps, step, jnp.zeros((ba, bb), jnp.int32))


def _gram_words(words: jax.Array) -> jax.Array:
    """Popcount Gram of packed rows; large batches in row blocks of 64."""
    b = words.shape[0]
    if b <= 128:
        return _cross_words(words, words)
    rows = -(-b // 64) * 64
    padded = jnp.pad(words, ((0, rows - b), (0, 0)))
    blocks = lax.map(
        lambda r: _cross_words(r, words), padded.reshape(rows // 64, 64, -1)
    )
    return blocks.reshape(rows, b)[:b]


def _gram_popcount(c: jax.Array) -> jax.Array:
    # Codes packed 32 to a uint32 word; G[i, j] = sum popcount(w_i & w_j). Exact.
    return _gram_words(_pack_codes(c))


def resolve_kernel_impl(impl: str) -> str:
    """``auto``: bit-packed popcount on CPU (2x faster there), matmul elsewhere."""
    if impl == "auto":
        return "popcount" if jax.default_backend() == "cpu" else "matmul"
    if impl not in ("matmul", "popcount"):
        raise ValueError(
            f"kernel impl must be 'auto', 'matmul' or 'popcount', got {impl!r}"
        )
    return impl


def codes_to_stats(codes: list[jax.Array], batch: int, impl: str = "auto") -> NwotStats:
    """Reduces a list of ReLU inputs (each ``[B, ...]``) to :class:`NwotStats`.

    Each layer's 0/1 Gram matrix is computed exactly, as a float32 matmul at HIGHEST
    precision (``impl="matmul"``; exact while a layer has fewer than 2**24 units per
    sample, checked) or from bit-packed codes with popcounts (``"popcount"``), then
    accumulated in int32.
    """
    impl = resolve_kernel_impl(impl)
    stats = NwotStats.zeros(batch)
    for x in codes:
        positive = (x > 0).reshape(batch, -1)
        units = positive.shape[1]
        if impl == "matmul":
            if units >= 2**24:
                raise ValueError(
                    f"a ReLU with {units} units per sample overflows exact float32"
                )
            gram = _gram_matmul(positive.astype(jnp.float32))
        else:
            gram = _gram_popcount(positive)
        # h_i = sum_u c_iu = sum_u c_iu c_iu = G_ii: the codes are read once.
        stats = stats + NwotStats(
            gram, jnp.diagonal(gram), jnp.asarray(units, jnp.int32)
        )
    return stats


def _memo_stats(
    codes: list[jax.Array], batch: int, memo: list[tuple[jax.Array, NwotStats]]
) -> NwotStats:
    """:func:`codes_to_stats`, reusing the statistics of code tensors seen before.

    ``memo`` holds ``(tensor, stats)`` pairs of one trace; a code that *is* (same
    object) a remembered tensor has the same signs, hence the same statistics.
    """
    stats = NwotStats.zeros(batch)
    for x in codes:
        hit = next((st for t, st in memo if t is x), None)
        if hit is None:
            hit = codes_to_stats([x], batch)
            memo.append((x, hit))
        stats = stats + hit
    return stats


def _apply_op(mod, p, b, x, k, train: bool, mutable: bool, codes):
    """``(y, new BN statistics)`` of module ``mod`` on ``x`` (``b`` when not mutable);
    ReLU inputs are appended to ``codes`` (a list, or None)."""
    v = {"params": p, "batch_stats": b}
    rngs = {"noise": k} if k is not None else None
    if not mutable:
        return mod.apply(v, x, train, codes, rngs=rngs), b
    y, upd = mod.apply(v, x, train, codes, rngs=rngs, mutable=["batch_stats"])
    return y, upd["batch_stats"]


def _own_buffers(tree: Any, index: jax.Array) -> Any:
    """``tree`` unchanged, held in buffers of its own (a fusion barrier on XLA:CPU).

    An edge's variables in a scanned cell are a dynamic slice of the stacked ones,
    and XLA fuses that slice into every consumer, re-evaluating its index for every
    element read: a depthwise convolution whose tap weights arrive that way runs ~5x
    slower on XLA:CPU. A conditional's operands and results are never fused across,
    so passing the tree through one whose branch returns it makes each leaf a
    buffer (a copy: the variables are small). Differentiated, the cotangents pass
    through the same conditional: an edge input's gradient (the sum of every op's
    transposed taps) is then computed by a fusion of its own, which runs on every
    core, instead of inside the single-threaded in-place update of the carried
    cotangent. ``index``: a traced, non-negative int32 scalar (here the edge's
    index or source state), so that XLA cannot fold the condition away.

    Other backends get ``tree`` as it is: a GPU runs a conditional by reading its
    predicate back to the host, and its fusions do not have this cost.
    """
    if jax.default_backend() != "cpu":
        return tree
    return lax.cond(
        index >= 0, lambda t: t, lambda t: jax.tree.map(jnp.zeros_like, t), tree
    )


class _OpLayout(NamedTuple):
    """Where one op's variables lie in a row of a flat ``[E, P]`` edge array."""

    start: int
    size: int
    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]


def _flatten_edge_vars(tree: dict[str, Any], op_names) -> tuple[jax.Array, dict]:
    """``{op: subtree of [E, ...] leaves}`` -> ``([E, P] float array, {op: _OpLayout})``.

    Each op's leaves lie contiguously in a row, in ``op_names`` order, so one
    ``dynamic_slice`` fetches an edge's op variables (:func:`_unflatten_op`).
    """
    cols, layout, start, n = [], {}, 0, None
    for name in op_names:
        if name not in tree:
            continue
        leaves, treedef = jax.tree.flatten(tree[name])
        if not leaves:
            continue
        n = leaves[0].shape[0]
        shapes = tuple(tuple(a.shape[1:]) for a in leaves)
        size = sum(int(np.prod(sh)) for sh in shapes)
        cols += [a.reshape(n, -1) for a in leaves]
        dtypes = tuple(a.dtype for a in leaves)
        layout[name] = _OpLayout(start, size, treedef, shapes, dtypes)
        start += size
    if not cols:
        return jnp.zeros((1, 1), jnp.float32), layout
    return jnp.concatenate(cols, axis=1), layout


def _unflatten_op(flat: jax.Array, i: jax.Array, lay: _OpLayout | None) -> Any:
    """Row ``i``'s variables of one op (``{}`` when the op has none)."""
    if lay is None:
        return {}
    seg = lax.dynamic_slice(flat, (i, lay.start), (1, lay.size))[0]
    leaves, at = [], 0
    for shape, dtype in zip(lay.shapes, lay.dtypes, strict=True):
        size = int(np.prod(shape))
        leaves.append(seg[at : at + size].reshape(shape).astype(dtype))
        at += size
    return jax.tree.unflatten(lay.treedef, leaves)


@dataclasses.dataclass(frozen=True)
class SupernetConfig:
    """Static structure of a supernet.

    Attributes:
      space: search-space name (``darts``, ``s1``-``s4``, ``nas-bench-201``).
      channels: C, the channels of the first cells (16 in the paper).
      layers: number of cells (8 in the paper).
      num_classes: classifier outputs.
      stem_multiplier: the stem has ``stem_multiplier * C`` channels.
      impl: depthwise conv / pool implementation (``auto``, ``loop``, ``shift``,
        ``fused``, ``xla``; see :mod:`jaxdarts.ops`).
      swap_cells: reproduce the reference's normal/reduce swap (``compat="dartsrl"``).
      eps: ops with softmax weight <= eps are skipped (dense path).
      edges: how a cell's 14 edges are traced: ``scan`` (a ``lax.scan`` over edge
        groups, one traced body per group: small programs, fast compiles),
        ``unroll`` (one traced edge each, no node buffer carried: discrete rewards
        ~1.3x faster on XLA:CPU, compiles ~2.5x longer) or ``auto`` (``scan``; the
        search command resolves its own ``auto``, see ``jaxdarts.build.edge_form``).
        The same results up to float rounding. Unrolled, the dense path's training
        step compiles for minutes and runs several times slower: keep it scanned.
    """

    space: str = "darts"
    channels: int = 16
    layers: int = 8
    num_classes: int = 10
    stem_multiplier: int = 3
    impl: str = "auto"
    swap_cells: bool = False
    eps: float = EPS
    edges: str = "auto"

    def __post_init__(self):
        get_space(self.space)
        if self.channels < 2 or self.channels % 2:
            raise ValueError(
                f"supernet channels must be an even number >= 2, got {self.channels}"
            )
        if self.layers < 1:
            raise ValueError(f"supernet layers must be >= 1, got {self.layers}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        ops_lib.resolve_impl(self.impl)
        if self.edges not in ("auto", "unroll", "scan"):
            raise ValueError(
                f"supernet edges must be 'auto', 'unroll' or 'scan', got {self.edges!r}"
            )


class _CellPlan(NamedTuple):
    reduce: bool
    reduce_prev: bool
    channels: int


def _torch_linear_init(fan_in: int):
    bound = 1.0 / np.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -bound, bound
    )


class _Head(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = x.mean(axis=(1, 2))
        fan_in = x.shape[-1]
        return nn.Dense(
            self.num_classes,
            kernel_init=_torch_linear_init(fan_in),
            bias_init=_torch_linear_init(fan_in),
        )(x)


class _Stem(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool = False, codes=None):
        x = ops_lib.Conv(self.features, 3, 1, 1)(x)
        return ops_lib.BatchNorm(affine=True)(x, train)


class Supernet:
    """A DARTS supernet: static plan plus pure ``init`` / ``apply`` functions.

    Example::

        net = Supernet(SupernetConfig(space="darts", channels=16, layers=8))
        variables = net.init(jax.random.key(0), (32, 32, 3))
        wn, wr = net.edge_weights(alpha_normal, alpha_reduce)       # [14, D] each
        logits, stats, _ = net.apply_dense(variables, wn, wr, images)
        logits = jax.vmap(net.apply_dense, (None, 0, 0, None))(variables, wns, wrs, x)[0]
    """

    def __init__(self, config: SupernetConfig):
        self.config = config
        self.space: SearchSpace = get_space(config.space)
        ops = self.space.distinct_ops()
        # `none` is always available: genotype scoring puts it on absent edges.
        self.op_names: tuple[str, ...] = ops if "none" in ops else ops + ("none",)
        self.none_index = self.op_names.index("none")
        self.num_ops = self.space.num_ops
        # one-hot scatter from the space's per-edge candidates to op_names: [14, K, D]
        self._scatter = {}
        self._index = {}
        for reduce in (False, True):
            table = np.array(
                [
                    [self.op_names.index(o) for o in ops_e]
                    for ops_e in self.space.ops(reduce)
                ]
            )
            self._index[reduce] = table
            self._scatter[reduce] = np.eye(len(self.op_names), dtype=np.float32)[table]
        c = config.channels
        plan = []
        reduce_prev = False
        for i in range(config.layers):
            reduce = i in (config.layers // 3, 2 * config.layers // 3)
            if reduce:
                c *= 2
            plan.append(_CellPlan(reduce, reduce_prev, c))
            reduce_prev = reduce
        self.plan: tuple[_CellPlan, ...] = tuple(plan)
        self._stem = _Stem(config.stem_multiplier * config.channels)
        self._head = _Head(config.num_classes)
        self._ops: dict[tuple, nn.Module] = {}
        self._op_calls: dict[tuple, tuple] = {}
        # Two threads may trace through one (cached) net at once, e.g. a search
        # compiling its chunk and its final rollouts side by side.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ modules
    def _preproc(self, cell: _CellPlan):
        # Their inputs arrive rectified (`_forward`): they skip their own ReLU.
        c = cell.channels
        p0 = (
            ops_lib.FactorizedReduce(c, affine=True, rectified=True)
            if cell.reduce_prev
            else ops_lib.ReLUConvBN(c, 1, 1, 0, affine=True, rectified=True)
        )
        return p0, ops_lib.ReLUConvBN(c, 1, 1, 0, affine=True, rectified=True)

    def _op(self, name: str, cell: _CellPlan, group: int) -> nn.Module:
        stride = 2 if cell.reduce and group == 0 else 1
        key = (name, cell.channels, stride)
        with self._lock:
            if key not in self._ops:  # one module object per op kind (see _op_call)
                self._ops[key] = ops_lib.make_op(
                    name, cell.channels, stride, affine=False, impl=self.config.impl
                )
            return self._ops[key]

    def _op_call(self, mod: nn.Module, train: bool, mutable: bool, collect: bool):
        """``(p, b, x, key) -> (y, new BN stats, NwotStats, input codes)`` of one op.

        Jitted. With ``collect`` the statistics are those of the op's ReLUs other
        than the ones reading ``x`` itself, whose number (int32) is returned instead
        (see :class:`_EdgeStats`); without, both are None.

        One function object per module and mode, so JAX traces and lowers an op
        once per input shape however many edges run it (an unrolled paper-size
        supernet has ~800 op applications); XLA inlines the calls, so the compiled
        program is the same.
        """
        cache_key = (id(mod), train, mutable, collect)
        with self._lock:
            entry = self._op_calls.get(cache_key)
            if entry is None:
                entry = self._new_op_call(mod, train, mutable, collect)
                self._op_calls[cache_key] = entry
        return entry[1]

    @staticmethod
    def _new_op_call(mod: nn.Module, train: bool, mutable: bool, collect: bool):
        """``(mod, jitted op call, counts)``: the entry :meth:`_op_call` caches."""
        counts: dict[tuple, tuple[int, int]] = {}

        def op_call(p, b, x, k):
            codes = [] if collect else None
            y, upd = _apply_op(mod, p, b, x, k, train, mutable, codes)
            if not collect:
                return y, upd, None, None
            inner = [c for c in codes if c is not x]
            units = sum(int(np.prod(c.shape[1:])) for c in inner)
            counts[tuple(x.shape)] = (len(codes) - len(inner), units)
            reads = jnp.int32(len(codes) - len(inner))
            return y, upd, codes_to_stats(inner, x.shape[0]), reads

        # `mod` kept alive (and so its id); `counts` filled as each shape is traced.
        return mod, jax.jit(op_call), counts

    def _op_counts(self, mod, train: bool, collect: bool, shape) -> tuple[int, int]:
        """``(input reads, inner units)`` of an op already traced on ``shape``.

        Static facts of the op (:meth:`_op_call` with ``collect``): how many of its
        ReLUs read its input, and how many units its other ReLUs have per sample.
        """
        return self._op_calls[(id(mod), train, False, collect)][2][tuple(shape)]

    # ------------------------------------------------------------------ init
    def init(self, key: jax.Array, image_shape: tuple[int, int, int]) -> dict[str, Any]:
        """Initialises ``{'params': ..., 'batch_stats': ...}`` for images ``[H, W, C_in]``.

        Parameters follow PyTorch's default initialisation (weights and the classifier
        bias ~ U(+-1/sqrt(fan_in)), BN scale 1 and bias 0); BN running statistics start
        at mean 0, variance 1. The structure comes from the Flax modules' ``init``
        under ``jax.eval_shape`` (no compile); the values from a single uniform draw, so
        initialising costs one small kernel instead of compiling hundreds of inits.
        """
        h, w, _ = image_shape
        if min(h, w) < 8:
            raise ValueError(f"images must be at least 8x8, got {h}x{w}")
        shapes = jax.eval_shape(
            functools.partial(self._init_structure, image_shape=image_shape), key
        )
        leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
        bounds, sizes = [], []
        head_fan_in = shapes["params"]["head"]["Dense_0"]["kernel"].shape[0]
        for path, leaf in leaves:
            bounds.append(_init_bound(path, leaf.shape, head_fan_in))
            sizes.append(int(np.prod(leaf.shape)))
        flat = jax.random.uniform(key, (max(sum(sizes), 1),), jnp.float32, -1.0, 1.0)
        out, offset = [], 0
        for (_path, leaf), bound, size in zip(leaves, bounds, sizes, strict=True):
            if isinstance(bound, float):
                value = flat[offset : offset + size].reshape(leaf.shape) * bound
                offset += size
            else:
                value = jnp.full(leaf.shape, bound[0], leaf.dtype)
            out.append(value)
        return jax.tree_util.tree_unflatten(treedef, out)

    def _init_structure(self, key: jax.Array, image_shape) -> dict[str, Any]:
        h, w, cin = image_shape
        x = jnp.zeros((1, h, w, cin), jnp.float32)
        stem_vars = self._stem.init(key, x)
        s0 = s1 = self._stem.apply(stem_vars, x)
        cells = []
        for cell in self.plan:
            p0, p1 = self._preproc(cell)
            v0, v1 = p0.init(key, s0), p1.init(key, s1)
            x0 = p1.apply(v1, s1)
            half = jnp.zeros(
                (1, (x0.shape[1] + 1) // 2, (x0.shape[2] + 1) // 2, x0.shape[3])
            )
            groups = {}
            for g, (gname, edges) in enumerate(_GROUPS):
                gx = half if (g == 1 and cell.reduce) else x0
                n_edges = len(edges)
                gvars = {}
                for name in self.op_names:
                    mod = self._op(name, cell, g)
                    v = mod.init({"params": key, "noise": key}, gx)
                    if jax.tree.leaves(v):
                        gvars[name] = jax.tree.map(
                            lambda a, n=n_edges: jnp.broadcast_to(a, (n,) + a.shape), v
                        )
                groups[gname] = gvars
            cells.append({"pre0": v0, "pre1": v1, "edges": groups})
            out = half if cell.reduce else x0
            s0, s1 = s1, jnp.zeros(out.shape[:3] + (NUM_NODES * cell.channels,))
        head_vars = self._head.init(key, s1)
        tree = _unfreeze({"stem": stem_vars, "cells": cells, "head": head_vars})

        def pick(t, col):
            if isinstance(t, dict):
                if "params" in t or "batch_stats" in t:
                    return t.get(col, {})
                return {k: pick(v, col) for k, v in t.items()}
            return [pick(v, col) for v in t]

        return {
            "params": pick(tree, "params"),
            "batch_stats": pick(tree, "batch_stats"),
        }

    # ------------------------------------------------------------------ archs
    def edge_weights(self, alpha_normal: jax.Array, alpha_reduce: jax.Array):
        """Softmax of ``[14, K]`` alphas, scattered to ``[14, D]`` over ``op_names``."""
        out = []
        for reduce, a in ((False, alpha_normal), (True, alpha_reduce)):
            if a.shape[-2:] != (NUM_EDGES, self.num_ops):
                raise ValueError(
                    f"alphas must be [..., {NUM_EDGES}, {self.num_ops}] for space "
                    f"{self.space.name!r}, got {a.shape}"
                )
            sm = jax.nn.softmax(a.astype(jnp.float32), axis=-1)
            out.append(jnp.einsum("...ek,ekd->...ed", sm, self._scatter[reduce]))
        return out[0], out[1]

    def choices(self, alpha_normal: jax.Array, alpha_reduce: jax.Array):
        """Argmax op per edge (lowest index on ties) as ``[14]`` indices into ``op_names``."""
        out = []
        for reduce, a in ((False, alpha_normal), (True, alpha_reduce)):
            if a.shape[-2:] != (NUM_EDGES, self.num_ops):
                raise ValueError(
                    f"alphas must be [..., {NUM_EDGES}, {self.num_ops}] for space "
                    f"{self.space.name!r}, got {a.shape}"
                )
            idx = jnp.argmax(a, axis=-1)
            out.append(jnp.asarray(self._index[reduce])[jnp.arange(NUM_EDGES), idx])
        return out[0].astype(jnp.int32), out[1].astype(jnp.int32)

    def choices_from_ops(self, normal_ops, reduce_ops):
        """Indices into ``op_names`` for per-edge op names (``None`` -> ``none``)."""
        out = []
        for ops in (normal_ops, reduce_ops):
            if len(ops) != NUM_EDGES:
                raise ValueError(f"need {NUM_EDGES} op names per cell, got {len(ops)}")
            idx = []
            for o in ops:
                o = "none" if o is None else o
                if o not in self.op_names:
                    raise ValueError(
                        f"op {o!r} is not in search space {self.space.name!r} "
                        f"({list(self.op_names)})"
                    )
                idx.append(self.op_names.index(o))
            out.append(jnp.asarray(idx, jnp.int32))
        return out[0], out[1]

    def one_hot_weights(self, choice_normal, choice_reduce):
        """``[14, D]`` one-hot edge weights of discrete choices (for the dense path)."""
        d = len(self.op_names)
        return (
            jax.nn.one_hot(choice_normal, d, dtype=jnp.float32),
            jax.nn.one_hot(choice_reduce, d, dtype=jnp.float32),
        )

    # ------------------------------------------------------------------ forward
    def _cell_arch(self, cell: _CellPlan, arch_normal, arch_reduce):
        use_reduce = cell.reduce != self.config.swap_cells
        return arch_reduce if use_reduce else arch_normal

    def apply_dense(
        self,
        variables: dict[str, Any],
        weights_normal: jax.Array,
        weights_reduce: jax.Array,
        images: jax.Array,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        collect: bool = False,
        mutable: bool = False,
    ):
        """Forward pass with every op computed and mixed by its weight.

        Args:
          variables: from :meth:`init`.
          weights_normal: ``[14, D]`` edge weights over ``op_names`` (normal cell).
          weights_reduce: ``[14, D]`` edge weights (reduction cell).
          images: ``[B, H, W, C_in]`` normalised float images.
          train: BN with batch statistics (else running statistics).
          key: PRNG key for the ``noise`` op (S4); required when the space has it.
          collect: also return the NWOT statistics of the counted ReLUs.
          mutable: return updated BN running statistics (needs ``train``).

        Returns:
          ``(logits [B, classes], NwotStats or None, new batch_stats or None)``.
        """
        return self._forward(
            variables,
            weights_normal,
            weights_reduce,
            images,
            train,
            key,
            collect,
            mutable,
            discrete=False,
        )

    def apply_discrete(
        self,
        variables: dict[str, Any],
        choice_normal: jax.Array,
        choice_reduce: jax.Array,
        images: jax.Array,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        collect: bool = False,
    ):
        """Forward pass running only the chosen op of each edge (``lax.switch``).

        Args:
          choice_normal, choice_reduce: ``[14]`` int indices into ``op_names``.
          Others as :meth:`apply_dense` (running statistics cannot be updated here).

        Returns:
          ``(logits, NwotStats or None, None)``. Equal to :meth:`apply_dense` with
          one-hot weights. Under ``jax.vmap`` the switch computes every branch: batch
          architectures with ``lax.map`` instead.
        """
        return self._forward(
            variables,
            choice_normal,
            choice_reduce,
            images,
            train,
            key,
            collect,
            False,
            discrete=True,
        )

    def _forward(
        self, variables, arch_n, arch_r, images, train, key, collect, mutable, discrete
    ):
        if mutable and not train:
            raise ValueError("mutable batch statistics need train=True")
        if "noise" in self.op_names and key is None:
            raise ValueError(f"space {self.space.name!r} has the noise op: pass key=")
        if key is None:
            key = jax.random.key(0)
        params, bstats = variables["params"], variables["batch_stats"]
        batch = images.shape[0]
        mut = ["batch_stats"] if mutable else False
        new_bs: dict[str, Any] = {"cells": []}
        stats = NwotStats.zeros(batch) if collect else None

        # Preprocessing ReLUs read whole cell states, and each state feeds two or
        # three of them (pre1 of one cell, pre0 of the next): their codes are equal,
        # so each state's statistics are computed once and added again. A cell
        # output's are entered here by `_state_stats`, as the sum of its nodes'.
        memo: list[tuple[jax.Array, NwotStats]] = []

        def run(mod, p, b, x, k=None, reuse=False, src=None):
            if not reuse:
                op = self._op_call(mod, train, bool(mut), collect)
                y, upd, st, reads = op(p, b, x, k)
                if src is None or not collect:
                    # The stem (a convolution of the images, no ReLU before it), or
                    # a discrete edge, which counts its input codes itself: `st`
                    # holds the op's other ReLUs only.
                    return y, upd, st
                # An edge op on cell state `src`: its input code is counted per state.
                onehot = jnp.arange(_NUM_STATES) == src
                return y, upd, _EdgeStats(st, onehot.astype(jnp.int32) * reads)
            # Preprocessing: traced in place, its codes memoised by identity.
            codes = [] if collect else None
            y, upd = _apply_op(mod, p, b, x, k, train, bool(mut), codes)
            st = _memo_stats(codes, batch, memo) if collect else None
            return y, upd, st

        # What the discrete edges use besides `run` (_unrolled_discrete and
        # _scan_discrete): an op's static counts once traced.
        run.counts = lambda mod, shape: self._op_counts(mod, train, collect, shape)
        run.collects = collect

        s, new_bs["stem"], _ = run(self._stem, params["stem"], bstats["stem"], images)
        # The stem's and the cells' outputs (but the last cell's, the classifier's
        # input) are read only by preprocessing ReLUs: rectified once where they are
        # made, which XLA fuses into the concatenation of the nodes, while a ReLU in
        # front of a 1x1 convolution is a pass over memory of its own (XLA:CPU does
        # not fuse it into the dot). Same values, codes and gradients.
        s0 = s1 = jax.nn.relu(s)
        for ci, cell in enumerate(self.plan):
            cp, cb = params["cells"][ci], bstats["cells"][ci]
            arch = self._cell_arch(cell, arch_n, arch_r)
            p0, p1 = self._preproc(cell)
            x0, b0, st0 = run(p0, cp["pre0"], cb["pre0"], s0, reuse=True)
            x1, b1, st1 = run(p1, cp["pre1"], cb["pre1"], s1, reuse=True)
            if collect:
                stats = stats + st0 + st1
            cell_key = jax.random.fold_in(key, ci)
            edge_keys = jax.random.split(cell_key, NUM_EDGES)
            cell_bs = {"pre0": b0, "pre1": b1, "edges": {}}
            arch = jnp.asarray(arch)
            edges_fn = (
                self._unrolled_edges
                if self._edge_impl() == "unroll"
                else self._scanned_cell
            )
            nodes, st, cell_bs["edges"] = edges_fn(
                cell,
                cp["edges"],
                cb["edges"],
                x0,
                x1,
                arch,
                edge_keys,
                run,
                discrete,
                batch,
                collect,
            )
            out = jnp.concatenate(nodes, axis=-1)
            last = ci == len(self.plan) - 1
            if not last:
                out = jax.nn.relu(out)
            if collect:
                stats = stats + st.codes
                stats = stats + self._state_stats(
                    [x0, x1, *nodes], st.reads, discrete, None if last else out, memo
                )
            s0, s1 = s1, out
            new_bs["cells"].append(cell_bs)
        logits = self._head.apply({"params": params["head"]}, s1)
        new_bs["head"] = bstats.get("head", {})
        return logits, stats, (new_bs if mutable else None)

    def _state_stats(self, states, reads, discrete, out, memo) -> NwotStats:
        """Statistics of the cell states as op inputs: ``sum_s reads[s] * stats(s)``.

        Args:
          states: the 2 preprocessed inputs and the 4 nodes, ``[B, h, w, C]`` each.
          reads: ``[6]`` int32 counts (:class:`_EdgeStats`).
          discrete: skip a state no op reads (``lax.cond``; the dense path's counts
            are rarely 0).
          out: the cell's output (its nodes concatenated), or None for the last cell.
            The next cells' preprocessing ReLUs read it; its statistics are the sum
            of its nodes' (a kernel sums over units, in any order) and are memoised.
        """
        batch = states[0].shape[0]
        total = NwotStats.zeros(batch)
        node_stats = []
        for s, x in enumerate(states):
            if out is None and s == _NUM_STATES - 1:
                continue  # the last node is no edge's input
            if out is not None and s >= 2:
                st = codes_to_stats([x], batch)
                node_stats.append(st)
                total = total + st.scale(reads[s])
            elif discrete:
                total = total + lax.cond(
                    reads[s] > 0,
                    lambda x, m: codes_to_stats([x], batch).scale(m),
                    lambda x, m: NwotStats.zeros(batch),
                    x,
                    reads[s],
                )
            else:
                total = total + codes_to_stats([x], batch).scale(reads[s])
        if out is not None:
            memo.append((out, functools.reduce(NwotStats.__add__, node_stats)))
        return total

    def _scanned_cell(
        self,
        cell,
        cp_edges,
        cb_edges,
        x0,
        x1,
        arch,
        edge_keys,
        run,
        discrete,
        batch,
        collect,
    ):
        """The 14 edges of a cell in ``lax.scan`` over edge groups (``edges="scan"``).

        Returns:
          ``(nodes: list of 4 [B, h, w, C], _EdgeStats or None, new edge BN stats)``.
        """
        new_edges = {}
        if cell.reduce:
            # Stride-2 edges from the inputs, then stride-1 edges between nodes.
            nodes = jnp.zeros((NUM_NODES,) + self._node_shape(x1, True), x1.dtype)
            inputs = jnp.stack([x0, x1])
            st = _EdgeStats.zeros(batch) if collect else None
            for group, (gname, edges) in enumerate(_GROUPS):
                nodes, st_g, upd = self._scan_edges(
                    cell,
                    group,
                    cp_edges[gname],
                    cb_edges[gname],
                    inputs if group == 0 else None,
                    nodes,
                    edges,
                    arch,
                    edge_keys,
                    run,
                    discrete,
                    batch,
                )
                new_edges[gname] = upd
                if collect:
                    st = st + st_g
        else:
            # Every edge has the same shape: one scan over all 14 edges.
            def cat(a, b):
                return jnp.concatenate([a, b])[_EDGE_ORDER]

            p_all = jax.tree.map(cat, cp_edges["in"], cp_edges["mid"])
            b_all = jax.tree.map(cat, cb_edges["in"], cb_edges["mid"])
            buf = jnp.stack([x0, x1] + [jnp.zeros_like(x1)] * NUM_NODES)
            buf, st, upd = self._scan_edges(
                cell,
                1,
                p_all,
                b_all,
                None,
                buf,
                tuple(range(NUM_EDGES)),
                arch,
                edge_keys,
                run,
                discrete,
                batch,
            )
            new_edges = {
                "in": jax.tree.map(lambda a: a[np.array(_IN_EDGES)], upd),
                "mid": jax.tree.map(lambda a: a[np.array(_MID_EDGES)], upd),
            }
            nodes = buf[2:]
        return list(nodes), st, new_edges

    def _unrolled_edges(
        self,
        cell,
        cp_edges,
        cb_edges,
        x0,
        x1,
        arch,
        edge_keys,
        run,
        discrete,
        batch,
        collect,
    ):
        """The 14 edges of a cell unrolled in Python (``edges="unroll"``).

        Each edge reads its input state directly (no node buffer is carried or
        copied) and each node is the sum of its edges' outputs. Discrete: one
        ``lax.switch`` per edge; dense: every op, weighted.

        Returns:
          ``(nodes: list of 4 [B, h, w, C], _EdgeStats or None, new edge BN stats)``.
        """
        if discrete:
            return self._unrolled_discrete(
                cell, cp_edges, cb_edges, x0, x1, arch, edge_keys, run, batch, collect
            )
        zero = _EdgeStats.zeros(batch)
        states = [x0, x1]
        stats = zero if collect else None
        new_b = {gname: [None] * len(edges) for gname, edges in _GROUPS}
        for n in range(NUM_NODES):
            node = None
            for e in (e for e in range(NUM_EDGES) if EDGE_NODE[e] == n):
                g, i = _EDGE_POS[e]
                gname = _GROUPS[g][0]
                pe = jax.tree.map(lambda a, i=i: a[i], cp_edges[gname])
                be = jax.tree.map(lambda a, i=i: a[i], cb_edges[gname])
                src = EDGE_INPUT[e]
                mods = [self._op(name, cell, g) for name in self.op_names]
                y, st, new_b[gname][i] = self._dense_edge(
                    mods, pe, be, arch[e], states[src], src, edge_keys[e], run, zero
                )
                node = y if node is None else node + y
                if collect:
                    stats = stats + st
            states.append(node)
        new_edges = {
            gname: jax.tree.map(lambda *a: jnp.stack(a), *new_b[gname])
            for gname, _ in _GROUPS
        }
        return states[2:], stats, new_edges

    def _unrolled_discrete(
        self, cell, cp_edges, cb_edges, x0, x1, arch, edge_keys, run, batch, collect
    ):
        """The discrete form of :meth:`_unrolled_edges`: one ``lax.switch`` per edge.

        A branch adds its op's output to the node. The Gram matrix of the ops'
        inner ReLUs (inside separable convolutions) runs through the switches as
        one accumulator that only those ops add to, so the other branches compute
        no statistics at all. What is static per op (how many of its ReLUs read
        the edge's input, how many units the others have) is tabulated once traced
        and picked by the choices after the switches.
        """
        states = [x0, x1]
        gram = jnp.zeros((batch, batch), jnp.int32) if collect else None
        tables = []  # per edge, per op: (input reads, inner units)
        for n in range(NUM_NODES):
            node = None
            for e in (e for e in range(NUM_EDGES) if EDGE_NODE[e] == n):
                g, i = _EDGE_POS[e]
                gname = _GROUPS[g][0]
                mods = [self._op(name, cell, g) for name in self.op_names]
                x = states[EDGE_INPUT[e]]
                pe = jax.tree.map(lambda a, i=i: a[i], cp_edges[gname])
                be = jax.tree.map(lambda a, i=i: a[i], cb_edges[gname])
                node, gram = self._discrete_edge(
                    mods, pe, be, arch[e], x, edge_keys[e], run, node, gram
                )
                if collect:
                    tables.append(self._count_table(mods, run, x.shape))
            states.append(node)
        if not collect:
            return states[2:], None, cb_edges
        tab = np.stack(tables)  # [14, D, 2]
        picked = jnp.take_along_axis(jnp.asarray(tab), arch[:, None, None], 1)[:, 0]
        src = jnp.asarray(np.array(EDGE_INPUT, np.int32))
        return states[2:], _picked_stats(gram, picked, src), cb_edges

    def _count_table(self, mods, run, shape) -> np.ndarray:
        """``[D, 2]`` int32: per op, (ReLUs reading its input, inner units) on
        ``shape`` (ops already traced on it; ``none`` has neither)."""
        return np.array(
            [
                (0, 0) if name == "none" else run.counts(mods[d], shape)
                for d, name in enumerate(self.op_names)
            ],
            np.int32,
        )

    def _discrete_edge(self, mods, pe, be, a, x, ke, run, acc, gram):
        """``acc + op_a(x)`` (``op_a(x)`` when ``acc`` is None) via ``lax.switch``.

        ``pe``/``be`` are the edge's variables; ``gram`` the running inner-ReLU Gram
        (None without statistics). Returns ``(node, gram)``.
        """

        def make_branch(d):
            name = self.op_names[d]

            def branch(pe, be, x, ke, acc, gram):
                if name == "none":  # exact zeros: nothing to add
                    if acc is None:
                        return jnp.zeros(self._op_out_shape(mods[d], x), x.dtype), gram
                    return acc, gram
                y, _, st = run(mods[d], pe.get(name, {}), be.get(name, {}), x, ke)
                node = y if acc is None else acc + y
                if gram is not None and run.counts(mods[d], x.shape)[1]:
                    gram = gram + st.gram
                return node, gram

            return branch

        branches = [make_branch(d) for d in range(len(self.op_names))]
        return lax.switch(a, branches, pe, be, x, ke, acc, gram)

    def _op_out_shape(self, mod, x):
        stride = getattr(mod, "stride", 1)
        b, h, w, c = x.shape
        return (b, -(-h // stride), -(-w // stride), c)

    def _dense_edge(self, mods, pe, be, w, x, src, ke, run, zero):
        """Weighted sum of every op on one edge; ops with weight <= eps are masked.

        ``x`` is cell state ``src``; returns ``(y, _EdgeStats, new BN statistics)``.
        """
        eps = self.config.eps
        total = None
        new_b = {}
        acc = zero
        for d, name in enumerate(self.op_names):
            if name == "none":
                continue  # exact zeros
            active = w[d] > eps
            y, upd, st = run(
                mods[d], pe.get(name, {}), be.get(name, {}), x, ke, src=src
            )
            contrib = y * jnp.where(active, w[d], 0.0).astype(y.dtype)
            total = contrib if total is None else total + contrib
            if name in be:
                # Inactive ops do not run in the reference: keep their statistics.
                new_b[name] = jax.tree.map(
                    lambda n, o, a=active: jnp.where(a, n, o), upd, be[name]
                )
            if st is not None:
                acc = acc + st.scale(active)
        if total is None:  # only `none` on this edge
            total = jnp.zeros(self._op_out_shape(mods[self.none_index], x), x.dtype)
        return total, acc, new_b

    def _edge_impl(self) -> str:
        # The unrolled form runs ~1.3x faster on CPU but compiles ~2.5x longer.
        return "scan" if self.config.edges == "auto" else self.config.edges

    def _node_shape(self, x, reduce: bool):
        b, h, w, c = x.shape
        return (b, (h + 1) // 2, (w + 1) // 2, c) if reduce else (b, h, w, c)

    def _scan_edges(
        self,
        cell,
        group,
        gp,
        gb,
        inputs,
        nodes,
        edges,
        arch,
        keys,
        run,
        discrete,
        batch,
    ):
        """Runs ``edges`` (in order) with one traced body, accumulating into ``nodes``.

        Args:
          group: 0 = edges reading the cell inputs (stride 2 in reduction cells),
            1 = stride-1 edges.
          gp, gb: parameters / BN statistics stacked over ``edges``.
          inputs: ``[2, B, H, W, C]`` preprocessed cell inputs, or None when every
            edge reads a node.
          nodes: ``[4, B, h, w, C]`` node accumulators (carry).
          arch: ``[14]`` op indices (discrete) or ``[14, D]`` weights (dense).

        Returns:
          ``(nodes, _EdgeStats, new stacked BN statistics)``.
        """
        idx = np.array(edges)
        src = jnp.asarray(np.array([EDGE_INPUT[e] for e in edges]), jnp.int32)
        dst = jnp.asarray(np.array([EDGE_NODE[e] for e in edges]), jnp.int32)
        mods = [self._op(name, cell, group) for name in self.op_names]
        zero = _EdgeStats.zeros(batch)

        # Three layouts: the carry holds all 6 states (normal cells: inputs is None
        # and nodes has 6 entries), or 4 nodes read from the inputs or from the nodes.
        offset = 2 if nodes.shape[0] == 2 + NUM_NODES else 0

        if discrete:
            xs = (arch[idx], keys[idx], src, dst)
            return self._scan_discrete(gp, gb, inputs, nodes, offset, xs, mods, run)

        def read(nodes, s):
            if inputs is not None:
                return inputs[s]
            return nodes[s - 2 + offset]

        # Rematerialised: the backward pass recomputes the edge from its input
        # instead of stacking every intermediate of every op per edge in the scan
        # (the dense training step runs ~1.2x faster on XLA:CPU; same arithmetic;
        # unlike a hand-made VJP, gradients of gradients keep working).
        # The scan already keeps XLA from merging the recomputation away.
        @functools.partial(jax.checkpoint, prevent_cse=False)
        def edge(pe, be, w, x, s, ke):
            pe, x = _own_buffers((pe, x), s)
            return self._dense_edge(mods, pe, be, w, x, s, ke, run, zero)

        def body(carry, xs):
            nodes, acc = carry
            pe, be, a, ke, s_, d_ = xs
            y, st, new_b = edge(pe, be, a, read(nodes, s_), s_, ke)
            return (nodes.at[d_ + offset].add(y), acc + st), new_b

        (nodes, st), new_b = lax.scan(
            body, (nodes, zero), (gp, gb, arch[idx], keys[idx], src, dst)
        )
        return nodes, st, new_b

    def _scan_discrete(self, gp, gb, inputs, nodes, offset, xs, mods, run):
        """The discrete form of :meth:`_scan_edges`: one ``lax.switch`` per edge.

        Each edge's variables are one row of a flat ``[E, P]`` array and a branch
        slices only its own op's segment of it (one small slice per edge instead of
        one per variable of every op). As in :meth:`_unrolled_discrete`, the inner
        ReLUs' Gram matrix is one accumulator in the carry and the per-op counts
        are picked from static tables after the scan. Eval-mode BN statistics do
        not change: they are returned as they are.
        """
        flat_p, lay_p = _flatten_edge_vars(gp, self.op_names)
        flat_b, lay_b = _flatten_edge_vars(gb, self.op_names)
        branches = [
            self._switch_branch(mods, d, run, lay_p, lay_b)
            for d in range(len(self.op_names))
        ]
        arch, _, src, _ = xs
        collect = run.collects
        batch = nodes.shape[1]

        def body(carry, xs):
            nodes, gram = carry
            i, a, ke, s_, d_ = xs
            # The branch slices its input: a `none` edge reads nothing.
            src_buf, at = (
                (inputs, s_) if inputs is not None else (nodes, s_ - 2 + offset)
            )
            y, gram = lax.switch(a, branches, flat_p, flat_b, i, src_buf, at, ke, gram)
            return (nodes.at[d_ + offset].add(y), gram), None

        e = jnp.arange(arch.shape[0], dtype=jnp.int32)
        gram = jnp.zeros((batch, batch), jnp.int32) if collect else None
        (nodes, gram), _ = lax.scan(body, (nodes, gram), (e,) + xs)
        if not collect:
            return nodes, None, gb
        shape = (inputs if inputs is not None else nodes).shape[1:]
        picked = jnp.asarray(self._count_table(mods, run, shape))[arch]  # [E, 2]
        return nodes, _picked_stats(gram, picked, src), gb

    def _switch_branch(self, mods, d, run, lay_p, lay_b):
        """Branch ``d`` of an edge's ``lax.switch``: ``(y, gram)`` of op ``d``.

        ``gram`` is the running inner-ReLU Gram (None without statistics), returned
        with op ``d``'s inner ReLUs added.
        """
        name = self.op_names[d]

        def branch(flat_p, flat_b, i, buf, at, ke, gram):
            x = buf[at]  # cell state `src`
            if name == "none":  # exact zeros
                return jnp.zeros(self._op_out_shape(mods[d], x), x.dtype), gram
            pe = _unflatten_op(flat_p, i, lay_p.get(name))
            be = _unflatten_op(flat_b, i, lay_b.get(name))
            pe, be = _own_buffers((pe, be), i)
            y, _, st = run(mods[d], pe, be, x, ke)
            if gram is not None and run.counts(mods[d], x.shape)[1]:
                gram = gram + st.gram
            return y, gram

        return branch

    # ------------------------------------------------------------------ helpers
    def num_params(self, variables: dict[str, Any]) -> int:
        """Scalar count of ``variables['params']`` (BN running stats excluded)."""
        return ops_lib.param_count(variables["params"])


def _init_bound(path, shape, head_fan_in: int | None) -> float | tuple[float]:
    """PyTorch default init of one leaf: a uniform bound, or ``(constant,)``."""
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    name = names[-1]
    stacked = "edges" in names
    core = shape[1:] if stacked else shape
    if names[0] == "batch_stats":
        return (0.0,) if name == "mean" else (1.0,)
    if name == "scale":
        return (1.0,)
    if name == "bias" and "BatchNorm_0" in names[-2:]:
        return (0.0,)
    if name == "depthwise":  # [k, k, C]: fan_in = k*k (groups = C)
        fan_in = core[0] * core[1]
    elif name == "kernel":  # [C_in, C_out] or [k, k, C_in, C_out]
        fan_in = int(np.prod(core[:-1]))
    elif name == "bias" and head_fan_in is not None:  # torch: the weight's fan_in
        fan_in = head_fan_in
    else:
        raise ValueError(f"no init rule for parameter {'/'.join(map(str, names))}")
    return float(1.0 / np.sqrt(fan_in))


def _unfreeze(tree):
    if hasattr(tree, "unfreeze"):
        tree = tree.unfreeze()
    if isinstance(tree, dict):
        return {k: _unfreeze(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unfreeze(v) for v in tree]
    return tree


@functools.lru_cache(maxsize=32)
def get_supernet(config: SupernetConfig) -> Supernet:
    """Cached :class:`Supernet` for a config (the plan is static)."""
    return Supernet(config)
