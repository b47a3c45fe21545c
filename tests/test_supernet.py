"""Supernet: parameter count, shapes, dense == discrete, vmap, cell swap, eps masking.

XLA:CPU compiles of a supernet are slow, so every test runs on one tiny supernet
(darts, C=4, 3 cells = normal, reduce, reduce; 8x8x1 images, batch 8, the ``xla`` op
implementation, which compiles faster than ``shift``) and each jitted function is
compiled once per module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import ops as ops_lib
from jaxdarts.spaces import EDGE_INPUT, NUM_EDGES, SPACES, get_space
from jaxdarts.supernet import Supernet, SupernetConfig

C, LAYERS, HW, BATCH = 4, 3, 8, 8
DARTS_OPS = SPACES["darts"].primitives
# Two architectures that use every darts op in both cells, and a third.
ARCHS = (
    ([DARTS_OPS[e % 8] for e in range(NUM_EDGES)],
     [DARTS_OPS[(3 * e + 1) % 8] for e in range(NUM_EDGES)]),
    ([DARTS_OPS[(5 * e + 2) % 8] for e in range(NUM_EDGES)],
     [DARTS_OPS[(e + 4) % 8] for e in range(NUM_EDGES)]),
    (["sep_conv_5x5"] * NUM_EDGES, ["skip_connect"] * 7 + ["none"] * 7),
)  # fmt: skip


# ----------------------------------------------------------- independent formulas


def reductions(layers: int) -> tuple[int, ...]:
    """Reduction cells of the reference network (search.py: i in [L//3, 2L//3])."""
    return (layers // 3, 2 * layers // 3)


def darts_param_count(
    channels: int, layers: int, in_channels: int = 3, classes: int = 10
) -> int:
    """Weights of the DARTS-space search supernet, from the architecture alone.

    Stem conv 3x3 (C_in -> 3C, no bias) + affine BN; per cell the preprocessing
    (ReLUConvBN 1x1 = C_in*C + 2C affine, or FactorizedReduce = 2*C_in*(C/2) + 2C
    after a reduction) and on each of the 14 edges: sep_conv kxk = 2*(k*k*C + C*C)
    (its BNs have affine=False), dil_conv kxk = k*k*C + C*C, skip at stride 2 =
    FactorizedReduce C*C (affine False), pools / none / identity 0; classifier
    (4*C_last)*classes + classes.
    """
    stem = 3 * channels
    n = 3 * 3 * in_channels * stem + 2 * stem
    c_pp = c_p = stem
    c, reduce_prev = channels, False
    for i in range(layers):
        reduce = i in reductions(layers)
        c = 2 * c if reduce else c
        n += (2 * c_pp * (c // 2) if reduce_prev else c_pp * c) + 2 * c
        n += c_p * c + 2 * c
        for e in range(NUM_EDGES):
            n += 2 * (9 * c + c * c) + 2 * (25 * c + c * c)  # sep 3x3, 5x5
            n += (9 * c + c * c) + (25 * c + c * c)  # dil 3x3, 5x5
            if reduce and EDGE_INPUT[e] < 2:
                n += c * c  # skip_connect at stride 2 = FactorizedReduce
        c_pp, c_p, reduce_prev = c_p, 4 * c, reduce
    return n + c_p * classes + classes


def counted_units(normal, reduce, hw: int, channels: int, layers: int) -> int:
    """NWOT units per sample (the reference implementation; docs/semantics.md): the inputs of the ReLUs that run.

    Every cell's two preprocessing ReLUs; 2 per sep_conv (on its input and on its
    strided intermediate), 1 per dil_conv / conv, 1 per skip_connect at stride 2.
    An edge entry may be a list of ops (all of them run).
    """
    h_pp = h_p = hw
    c_pp = c_p = 3 * channels
    c, n = channels, 0
    for i in range(layers):
        red = i in reductions(layers)
        c = 2 * c if red else c
        n += h_pp * h_pp * c_pp + h_p * h_p * c_p
        for e, entry in enumerate(reduce if red else normal):
            stride = 2 if red and EDGE_INPUT[e] < 2 else 1
            h_in = h_p if (EDGE_INPUT[e] < 2 or not red) else h_p // 2
            for op in [entry] if isinstance(entry, str) else entry:
                if op.startswith("sep_conv"):
                    n += h_in * h_in * c + (-(-h_in // stride)) ** 2 * c
                elif op.startswith(("dil_conv", "conv_")):
                    n += h_in * h_in * c
                elif op == "skip_connect" and stride == 2:
                    n += h_in * h_in * c
        c_pp, h_pp, c_p, h_p = c_p, h_p, 4 * c, (h_p // 2 if red else h_p)
    return n


def test_unit_formula_matches_the_reference_counts():
    # the reference implementation, DARTS space, C=16, 8 layers, 32x32 images.
    assert counted_units(["sep_conv_5x5"] * 14, ["sep_conv_5x5"] * 14, 32, 16, 8) == (
        2_899_968
    )
    assert counted_units(["none"] * 14, ["max_pool_3x3"] * 14, 32, 16, 8) == 655_360
    every = [list(DARTS_OPS)] * 14
    assert counted_units(every, every, 32, 16, 8) == 8_077_312


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def net():
    return Supernet(SupernetConfig(channels=C, layers=LAYERS, impl="xla"))


@pytest.fixture(scope="module")
def variables(net):
    return net.init(jax.random.key(0), (HW, HW, 1))


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), (BATCH, HW, HW, 1))


@pytest.fixture(scope="module")
def fns(net):
    """Jitted forward passes, each compiled once: ``(logits, NwotStats)``."""

    def disc(v, a, b, x):
        return net.apply_discrete(v, a, b, x, collect=True)[:2]

    def dense(v, a, b, x):
        return net.apply_dense(v, a, b, x, collect=True)[:2]

    return {
        "disc": jax.jit(disc),
        "dense": jax.jit(dense),
        "vdense": jax.jit(jax.vmap(dense, in_axes=(None, 0, 0, None))),
    }


@pytest.fixture(scope="module")
def choices(net):
    return [net.choices_from_ops(n, r) for n, r in ARCHS]


@pytest.fixture(scope="module")
def disc_out(fns, variables, choices, images):
    return [fns["disc"](variables, cn, cr, images) for cn, cr in choices]


def assert_same(a, b, atol=1e-5):
    (la, sa), (lb, sb) = a, b
    np.testing.assert_allclose(np.asarray(la), np.asarray(lb), rtol=1e-5, atol=atol)
    np.testing.assert_array_equal(np.asarray(sa.kernel()), np.asarray(sb.kernel()))
    assert int(sa.units) == int(sb.units)


def row(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


# ------------------------------------------------------------------ (a) params


def test_param_count_of_the_paper_supernet():
    expected = darts_param_count(16, 8, 3, 10)
    assert (
        expected == 1_931_898
    )  # "about 1.93M" (the reference implementation; docs/semantics.md)
    net = Supernet(SupernetConfig(channels=16, layers=8, num_classes=10))
    shapes = jax.eval_shape(lambda k: net.init(k, (32, 32, 3)), jax.random.key(0))
    assert net.num_params(shapes) == expected


def test_param_count_of_the_tiny_supernet(net, variables):
    assert net.num_params(variables) == darts_param_count(C, LAYERS, 1, 10)
    # BN running statistics are not parameters.
    assert jax.tree.leaves(variables["batch_stats"])


# ------------------------------------------------------------------ (b) shapes

# Every space, both image kinds and both depths; the costly traces (darts, s1) once
# each (darts at 8x8x1 with 3 cells runs for real in the tests below).
SHAPE_CASES = [
    ("darts", (16, 16, 3), 3),
    ("s1", (16, 16, 3), 2),
    ("s2", (8, 8, 1), 3),
    ("s3", (16, 16, 3), 3),
    ("s4", (8, 8, 1), 2),
    ("nas-bench-201", (8, 8, 1), 2),
    ("nas-bench-201", (16, 16, 3), 3),
]
assert {c[0] for c in SHAPE_CASES} == set(SPACES)


@pytest.mark.parametrize("space,shape,layers", SHAPE_CASES)
def test_output_shapes(space, shape, layers):
    classes = 7
    net = Supernet(
        SupernetConfig(space=space, channels=4, layers=layers, num_classes=classes)
    )
    key = jax.random.key(0)
    var = jax.eval_shape(lambda k: net.init(k, shape), key)
    x = jax.ShapeDtypeStruct((3,) + shape, jnp.float32)
    cn = cr = jax.ShapeDtypeStruct((NUM_EDGES,), jnp.int32)
    logits, stats, _ = jax.eval_shape(
        lambda v, a, b, x: net.apply_discrete(v, a, b, x, key=key, collect=True),
        var,
        cn,
        cr,
        x,
    )
    assert logits.shape == (3, classes) and logits.dtype == jnp.float32
    assert stats.gram.shape == (3, 3) and stats.active.shape == (3,)
    d = len(net.op_names)
    w = jax.ShapeDtypeStruct((NUM_EDGES, d), jnp.float32)
    logits, _, bs = jax.eval_shape(
        lambda v, a, b, x: net.apply_dense(
            v, a, b, x, key=key, train=True, mutable=True
        ),
        var,
        w,
        w,
        x,
    )
    assert logits.shape == (3, classes)
    assert jax.tree.structure(bs) == jax.tree.structure(var["batch_stats"])


def test_plan_reductions_and_channels(net):
    assert [c.reduce for c in net.plan] == [False, True, True]
    assert [c.reduce_prev for c in net.plan] == [False, False, True]
    assert [c.channels for c in net.plan] == [C, 2 * C, 4 * C]


# ------------------------------------------------- (c) dense == discrete, one-hot


def test_dense_equals_discrete_on_one_hot(
    net, fns, variables, choices, disc_out, images
):
    for (cn, cr), want in zip(choices, disc_out, strict=True):
        got = fns["dense"](variables, *net.one_hot_weights(cn, cr), images)
        assert_same(got, want)
        assert np.isfinite(np.asarray(want[0])).all()


def test_discrete_counts_only_the_chosen_ops(disc_out):
    for (normal, reduce), (_, stats) in zip(ARCHS, disc_out, strict=True):
        units = counted_units(normal, reduce, HW, C, LAYERS)
        assert int(stats.units) == units
        np.testing.assert_array_equal(np.diag(np.asarray(stats.kernel())), units)


# ------------------------------------------------- (d) vmap == separate calls


def test_vmapped_dense_equals_separate_calls(net, fns, variables, images):
    key = jax.random.key(2)
    alphas = jax.random.normal(key, (2, 3, NUM_EDGES, net.num_ops))  # soft archs
    wn, wr = net.edge_weights(alphas[0], alphas[1])
    assert wn.shape == (3, NUM_EDGES, len(net.op_names))
    batched = fns["vdense"](variables, wn, wr, images)
    for i in range(3):
        assert_same(row(batched, i), fns["dense"](variables, wn[i], wr[i], images))
    # soft architectures run every op: more units than any single choice
    assert int(batched[1].units[0]) == counted_units(
        [list(DARTS_OPS)] * 14, [list(DARTS_OPS)] * 14, HW, C, LAYERS
    )


# --------------------------------------------------------- (e) cell swap


def test_swap_cells_exchanges_the_cell_architectures(net, fns, variables, images):
    swapped = Supernet(
        SupernetConfig(channels=C, layers=LAYERS, impl="xla", swap_cells=True)
    )

    @jax.jit
    def disc_swapped(v, a, b, x):
        return swapped.apply_discrete(v, a, b, x, collect=True)[:2]

    a = net.choices_from_ops(*ARCHS[0])[0]  # a normal-cell choice
    b = net.choices_from_ops(*ARCHS[1])[1]  # a reduction-cell choice
    got = disc_swapped(variables, a, b, images)
    assert_same(got, fns["disc"](variables, b, a, images), atol=0)
    # Without the swap the normal choice drives the normal cell (cell 0) only:
    # and the two orders differ.
    plain = fns["disc"](variables, a, b, images)
    assert not np.allclose(np.asarray(plain[0]), np.asarray(got[0]))
    normal, reduce = ARCHS[0][0], ARCHS[1][1]
    assert int(plain[1].units) == counted_units(normal, reduce, HW, C, LAYERS)
    assert int(got[1].units) == counted_units(reduce, normal, HW, C, LAYERS)


def test_normal_choice_only_affects_normal_cells(net, fns, variables, choices, images):
    cn, cr = choices[0]
    other = choices[1][0]
    base = fns["disc"](variables, cn, cr, images)
    changed = fns["disc"](variables, other, cr, images)
    assert not np.allclose(np.asarray(base[0]), np.asarray(changed[0]))
    # Exact: the units of the reduction cells are unchanged, cell 0's follow `other`.
    assert int(changed[1].units) == counted_units(
        ARCHS[1][0], ARCHS[0][1], HW, C, LAYERS
    )


# ------------------------------------------------- (f) eps masking, sentinels


def test_ops_at_or_below_eps_contribute_nothing(
    net, fns, variables, choices, disc_out, images
):
    cn, cr = choices[0]
    # sentinel alphas as the discrete env sets them: 1e6 on the chosen op
    rng = np.random.default_rng(0)
    alphas = []
    for choice in (cn, cr):
        a = 1e-3 * rng.standard_normal((NUM_EDGES, net.num_ops))
        a[np.arange(NUM_EDGES), np.asarray(choice)] = 1e6  # darts: index = op index
        alphas.append(jnp.asarray(a, jnp.float32))
    sn, sr = net.edge_weights(*alphas)
    hot_n, hot_r = net.one_hot_weights(cn, cr)
    np.testing.assert_array_equal(np.asarray(sn), np.asarray(hot_n))
    np.testing.assert_array_equal(np.asarray(sr), np.asarray(hot_r))
    at_eps = (hot_n + 1e-3 * (1 - hot_n), hot_r + 1e-3 * (1 - hot_r))
    above = (hot_n + 2e-3 * (1 - hot_n), hot_r + 2e-3 * (1 - hot_r))
    wn = jnp.stack([sn, at_eps[0], above[0]])
    wr = jnp.stack([sr, at_eps[1], above[1]])
    out = fns["vdense"](variables, wn, wr, images)
    want = disc_out[0]
    # Sentinel weights / weights <= eps: the discrete result up to float rounding
    # (vmap batches the matmuls differently: ~1e-9 on logits of ~0.1).
    assert_same(row(out, 0), want, atol=1e-8)
    assert_same(row(out, 1), want, atol=1e-8)
    every = [list(DARTS_OPS)] * 14
    assert int(out[1].units[2]) == counted_units(every, every, HW, C, LAYERS)
    assert not np.allclose(np.asarray(out[0][2]), np.asarray(want[0]), atol=1e-7)


# --------------------------------------------------------- (g) noise op


def test_noise_op_ignores_its_input_and_needs_a_key():
    op = ops_lib.make_op("noise", 4, 2)
    x = jnp.ones((2, 8, 8, 4))
    key = jax.random.key(3)
    y1 = op.apply({}, x, rngs={"noise": key})
    y2 = op.apply({}, -5 * x + 1, rngs={"noise": key})
    assert y1.shape == (2, 4, 4, 4)
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    y3 = op.apply({}, x, rngs={"noise": jax.random.key(4)})
    assert not np.allclose(np.asarray(y1), np.asarray(y3))
    assert 0.5 < float(jnp.std(y1)) < 1.5

    net = Supernet(SupernetConfig(space="s4", channels=4, layers=2))
    assert net.op_names == ("noise", "sep_conv_3x3", "none")
    var = jax.eval_shape(lambda k: net.init(k, (8, 8, 1)), key)
    with pytest.raises(ValueError, match="noise"):
        net.apply_discrete(var, jnp.zeros(14, jnp.int32), jnp.zeros(14, jnp.int32), x)


def test_all_noise_supernet_output_is_independent_of_the_input():
    net = Supernet(SupernetConfig(space="s4", channels=4, layers=2, impl="xla"))
    var = net.init(jax.random.key(0), (8, 8, 1))
    noise = jnp.zeros(NUM_EDGES, jnp.int32)  # op 0 = noise on every edge

    @jax.jit
    def logits(x, key):
        return net.apply_discrete(var, noise, noise, x, key=key)[0]

    x1 = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    x2 = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    k = jax.random.key(7)
    np.testing.assert_array_equal(np.asarray(logits(x1, k)), np.asarray(logits(x2, k)))
    assert not np.allclose(
        np.asarray(logits(x1, k)), np.asarray(logits(x1, jax.random.key(8)))
    )


# ------------------------------------------------- (h) edge weights / choices


def test_edge_weights_and_choices_shapes(net):
    a = jax.random.normal(jax.random.key(0), (NUM_EDGES, 8))
    wn, wr = net.edge_weights(a, 2 * a)
    assert wn.shape == wr.shape == (NUM_EDGES, len(net.op_names))
    np.testing.assert_allclose(np.asarray(wn.sum(-1)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(wn), np.asarray(jax.nn.softmax(a, -1)), rtol=1e-6
    )
    bn, br = net.edge_weights(jnp.stack([a, a]), jnp.stack([a, a]))
    assert bn.shape == (2, NUM_EDGES, 8)
    cn, cr = net.choices(a, 2 * a)
    assert cn.shape == cr.shape == (NUM_EDGES,) and cn.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(cn), np.argmax(np.asarray(a), -1))
    # ties go to the lowest index
    zn, _ = net.choices(jnp.zeros((NUM_EDGES, 8)), jnp.zeros((NUM_EDGES, 8)))
    np.testing.assert_array_equal(np.asarray(zn), 0)


@pytest.mark.parametrize("shape", [(NUM_EDGES, 7), (13, 8), (NUM_EDGES,)])
def test_edge_weights_reject_wrong_alpha_shapes(net, shape):
    good = jnp.zeros((NUM_EDGES, 8))
    with pytest.raises(ValueError, match=r"alphas must be \[\.\.\., 14, 8\]"):
        net.edge_weights(jnp.zeros(shape), good)
    with pytest.raises(ValueError, match="alphas must be"):
        net.edge_weights(good, jnp.zeros(shape))


@pytest.mark.parametrize("shape", [(NUM_EDGES, 7), (NUM_EDGES, 9)])
def test_choices_reject_wrong_alpha_shapes(net, shape):
    good = jnp.zeros((NUM_EDGES, 8))
    with pytest.raises(ValueError, match="alphas must be"):
        net.choices(jnp.zeros(shape).at[:, -1].set(1.0), good)


def test_choices_from_ops_errors(net):
    with pytest.raises(ValueError, match="14 op names"):
        net.choices_from_ops(["none"] * 13, ["none"] * 14)
    with pytest.raises(ValueError, match="not in search space"):
        net.choices_from_ops(["conv_3x3"] * 14, ["none"] * 14)
    cn, _ = net.choices_from_ops([None] * 14, ["none"] * 14)
    np.testing.assert_array_equal(np.asarray(cn), net.none_index)


def test_per_edge_space_scatter():
    # S1 offers different op pairs per edge: weights land on the right op_names.
    space = get_space("s1")
    net = Supernet(SupernetConfig(space="s1", channels=4, layers=2))
    a = jnp.stack([jnp.arange(2.0)] * NUM_EDGES)  # second candidate preferred
    wn, wr = net.edge_weights(a, a)
    cn, cr = net.choices(a, a)
    p = float(jax.nn.softmax(jnp.arange(2.0))[1])
    for e in range(NUM_EDGES):
        for w, c, ops in ((wn, cn, space.normal[e]), (wr, cr, space.reduce[e])):
            assert net.op_names[int(c[e])] == ops[1]
            assert float(w[e, net.op_names.index(ops[1])]) == pytest.approx(p)
            assert float(w[e].sum()) == pytest.approx(1.0)
    assert "none" in net.op_names  # always available for genotype scoring


def test_flat_edge_variables_round_trip():
    # The discrete scan fetches an edge's op variables from one flat row.
    from jaxdarts.supernet import _flatten_edge_vars, _unflatten_op

    rng = np.random.default_rng(0)
    tree = {
        "sep": {"a": rng.standard_normal((3, 2, 5)), "b": rng.standard_normal((3, 4))},
        "pool": {"mean": rng.standard_normal((3, 6)).astype(np.float32)},
        "skip": {},
    }
    tree = jax.tree.map(jnp.asarray, tree)
    flat, layout = _flatten_edge_vars(tree, ("pool", "skip", "sep", "none"))
    assert flat.shape == (3, 6 + 10 + 4)
    assert set(layout) == {"pool", "sep"}
    for i in range(3):
        for name in ("pool", "sep"):
            got = _unflatten_op(flat, jnp.int32(i), layout[name])
            want = jax.tree.map(lambda a, i=i: a[i], tree[name])
            assert jax.tree.structure(got) == jax.tree.structure(want)
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    assert _unflatten_op(flat, jnp.int32(0), None) == {}


def test_own_buffers_is_the_identity_in_values_and_derivatives():
    # The fusion barrier around a scanned edge's variables and input: a conditional
    # on CPU (that is what keeps XLA from fusing across it), values and gradients
    # passed through unchanged, also under vmap and in forward mode.
    from jaxdarts.supernet import _own_buffers

    rng = np.random.default_rng(1)
    tree = {"k": jnp.asarray(rng.standard_normal((3, 3, 4)), jnp.float32),
            "x": jnp.asarray(rng.standard_normal((2, 5, 5, 4)), jnp.float32)}  # fmt: skip
    w = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), tree)

    def f(t, i):
        out = _own_buffers(t, i)
        return sum(
            jnp.sum(a * b)
            for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(w), strict=True)
        )

    def same(a, b):
        jax.tree.map(
            lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)),
            a,
            b,
        )

    i = jnp.int32(2)
    same(jax.jit(_own_buffers)(tree, i), tree)
    same(jax.jit(jax.grad(f))(tree, i), w)
    _, tangent = jax.jvp(lambda t: f(t, i), (tree,), (w,))
    want = sum(
        float(np.sum(np.asarray(a, np.float64) ** 2)) for a in jax.tree.leaves(w)
    )
    assert float(tangent) == pytest.approx(want, rel=1e-5)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), tree)
    same(jax.vmap(lambda t: _own_buffers(t, i))(stacked), stacked)
    if jax.default_backend() == "cpu":
        assert "cond" in str(jax.make_jaxpr(lambda t: _own_buffers(t, i))(tree))


def test_unrolled_ops_are_lowered_once_per_module():
    # Every op of every edge is called, but each op module (kind, channels, stride)
    # is one function of the lowered program: tracing and lowering stay small.
    import re

    net = Supernet(SupernetConfig(channels=4, layers=3, edges="unroll"))
    variables = net.init(jax.random.key(0), (8, 8, 1))
    images = jnp.zeros((2, 8, 8, 1))
    cn, cr = net.choices_from_ops(["none"] * NUM_EDGES, ["none"] * NUM_EDGES)

    def f(v, a, b, x):
        return net.apply_discrete(v, a, b, x, collect=True)[:2]

    text = jax.jit(f).lower(variables, cn, cr, images).as_text()
    funcs = re.findall(r"func\.func (?:private )?@(op_call(?:_\d+)?)\(", text)
    sites = re.findall(r"call @(op_call(?:_\d+)?)\(", text)
    real_ops = len(net.op_names) - 1  # `none` runs nothing
    # 3 cells x 14 edges x 7 ops, plus the stem.
    assert len(sites) == 3 * NUM_EDGES * real_ops + 1
    # cell 0: 7 ops at stride 1; cells 1 and 2 (reductions): 7 at stride 2 and 7
    # at stride 1 each (new channel counts); plus the stem.
    assert len(funcs) == len(set(sites)) == real_ops * 5 + 1


@pytest.mark.parametrize("path, edges", [("discrete", "unroll"), ("dense", "scan")])
def test_kernel_equals_numpy_over_every_relu_that_ran(path, edges):
    # A cell state ReLU'd by several ops (their input) has its statistics computed
    # once and counted per op, and a cell output's are its nodes' sum. The kernel
    # is still exactly that of every ReLU input that ran, recorded as it ran
    # (test_rewards checks the discrete scanned form the same way).
    recorded = []
    original = ops_lib.relu

    def recording_relu(x, codes, rectified=False):
        jax.debug.callback(lambda v: recorded.append(np.asarray(v)), x)
        return original(x, codes, rectified)

    net = Supernet(SupernetConfig(channels=C, layers=LAYERS, impl="xla", edges=edges))
    variables = net.init(jax.random.key(0), (HW, HW, 1))
    images = jax.random.normal(jax.random.key(1), (BATCH, HW, HW, 1))
    if path == "discrete":
        # every op in both cells, several convolutions reading the same state; then
        # other architectures through the same compiled program (the per-op counts
        # are picked by the choices at run time)
        archs = [ARCHS[1], ARCHS[0], ARCHS[2]]
        arch = net.choices_from_ops(*ARCHS[1])

        def f(v, a, b, x):
            return net.apply_discrete(v, a, b, x, collect=True)[1]
    else:
        # weights all above eps: every op runs and counts
        arch = jax.nn.softmax(jax.random.normal(jax.random.key(2), (2, 14, 8)))
        assert float(arch.min()) > 1e-3

        def f(v, a, b, x):
            return net.apply_dense(v, a, b, x, collect=True)[1]

        every = [list(DARTS_OPS)] * NUM_EDGES
        archs = [(every, every)]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops_lib, "relu", recording_relu)
        compiled = jax.jit(f).lower(variables, *arch, images).compile()
    for normal, reduce in archs:
        if path == "discrete":
            arch = net.choices_from_ops(normal, reduce)
        recorded.clear()
        stats = compiled(variables, *arch, images)
        jax.block_until_ready(stats)
        jax.effects_barrier()
        c = np.concatenate([(x.reshape(BATCH, -1) > 0) for x in recorded], 1)
        c = c.astype(np.int64)
        want = c @ c.T + (1 - c) @ (1 - c).T
        np.testing.assert_array_equal(np.asarray(stats.kernel()), want)
        assert int(stats.units) == c.shape[1]
        assert c.shape[1] == counted_units(normal, reduce, HW, C, LAYERS)
