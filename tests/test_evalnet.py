"""Tests of the evaluation network (jaxdarts.evalnet)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts.evalnet import AuxiliaryHead, EvalNet, drop_path, num_params
from jaxdarts.genotypes import PUBLISHED, Genotype

# ------------------------------------------------------------ parameter counts


def _op_params(op: str, c: int, stride: int) -> int:
    """Parameters of one op at ``c`` channels (affine BN: 2c)."""
    if op.startswith("sep_conv_"):  # 2 x (depthwise k*k*c + pointwise c*c + BN)
        k = int(op[-1])
        return 2 * (k * k * c + c * c + 2 * c)
    if op.startswith("dil_conv_"):  # depthwise k*k*c + pointwise c*c + BN
        k = int(op[-1])
        return k * k * c + c * c + 2 * c
    if op == "skip_connect":  # identity, or FactorizedReduce: 2 x c*(c/2) + BN
        return 0 if stride == 1 else c * c + 2 * c
    if op == "conv_1x1":
        return c * c + 2 * c
    if op == "conv_3x3":
        return 9 * c * c + 2 * c
    return 0  # pools (BN without affine), noise, none


def derived_param_count(
    g: Genotype, c: int = 36, layers: int = 20, classes: int = 10, c_in: int = 3
) -> tuple[int, int]:
    """(network without aux head, aux head) parameters, from the architecture.

    Stem conv 3x3 (c_in -> 3c) + BN; per cell preproc0/1 (1x1 conv or
    FactorizedReduce, both c_prev * c weights, + BN); the ops; linear classifier.
    Aux head (after cell 2L//3, c_aux channels): conv1x1 c_aux->128 + BN,
    conv2x2 128->768 + BN, linear 768->classes.
    """
    cc = 3 * c
    total = 9 * c_in * cc + 2 * cc
    c_pp, c_p, c_cur, c_aux = cc, cc, c, 0
    for i in range(layers):
        reduce = i in (layers // 3, 2 * layers // 3)
        c_cur *= 2 if reduce else 1
        total += (c_pp * c_cur + 2 * c_cur) + (c_p * c_cur + 2 * c_cur)
        pairs = g.reduce if reduce else g.normal
        total += sum(
            _op_params(op, c_cur, 2 if reduce and j < 2 else 1) for op, j in pairs
        )
        concat = g.reduce_concat if reduce else g.normal_concat
        c_pp, c_p = c_p, len(concat) * c_cur
        if i == 2 * layers // 3:
            c_aux = c_p
    total += c_p * classes + classes
    aux = (
        (c_aux * 128 + 2 * 128) + (128 * 768 * 4 + 2 * 768) + (768 * classes + classes)
    )
    return total, aux


# the reference implementation, in millions (3 decimals), and the exact counts derived here.
PUBLISHED_M = {
    "disc-nwot": (2.899, 2_898_766),
    "disc-acc": (1.575, 1_575_118),
    "disc-loss": (2.130, 2_130_238),
    "disc-ckpt-acc": (3.602, 3_601_846),
    "disc-ckpt-loss": (1.550, 1_549_846),
    "cont-acc-step": (2.965, 2_965_294),
    "cont-acc-grad-step": (2.938, 2_938_294),
    "cont-loss-step": (2.967, 2_967_238),
    "cont-loss-grad-step": (3.031, 3_030_958),
}
AUX_EXACT = 476_426  # 576*128 + 256 + 128*768*4 + 1536 + 768*10 + 10


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_published_param_counts(name):
    millions, exact = PUBLISHED_M[name]
    derived, aux = derived_param_count(PUBLISHED[name])
    assert derived == exact
    assert round(derived / 1e6, 3) == millions
    assert aux == AUX_EXACT and round(aux / 1e6, 3) == 0.476
    # The model (shapes only; any image size >= 8 gives the same count).
    model = EvalNet(PUBLISHED[name], channels=36, layers=20, num_classes=10, impl="xla")
    assert num_params(model, (8, 8, 3)) == exact


def test_aux_head_param_count():
    # The head alone, on the 8x8x576 map it sees at C=36 on CIFAR.
    head = AuxiliaryHead(10)
    x = jax.ShapeDtypeStruct((2, 8, 8, 576), jnp.float32)
    shapes = jax.eval_shape(lambda x: head.init(jax.random.key(0), x, False), x)
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))
    assert n == AUX_EXACT
    # In a whole network (a small one, so the test stays fast) it adds its share.
    g = PUBLISHED["disc-acc"]
    base, aux = derived_param_count(g, c=8, layers=5, c_in=1)
    with_aux = EvalNet(g, channels=8, layers=5, auxiliary=True, impl="xla")
    assert num_params(with_aux, (8, 8, 1)) == base + aux


# ---------------------------------------------------------------------- shapes

# Every op the library implements, on every kind of input (incl. a node input).
ALL_OPS = Genotype(
    normal=(
        ("conv_1x1", 0),
        ("conv_3x3", 1),
        ("noise", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 2),
        ("dil_conv_5x5", 0),
        ("max_pool_3x3", 3),
        ("avg_pool_3x3", 1),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("sep_conv_5x5", 0),
        ("skip_connect", 1),
        ("noise", 1),
        ("dil_conv_3x3", 2),
        ("conv_3x3", 0),
        ("conv_1x1", 3),
        ("avg_pool_3x3", 4),
        ("max_pool_3x3", 0),
    ),
    reduce_concat=(2, 3, 4, 5),
)

RNGS = ("params", "dropout", "drop_path", "noise")


def _rngs(seed: int = 0) -> dict:
    return {k: jax.random.fold_in(jax.random.key(seed), i) for i, k in enumerate(RNGS)}


@pytest.mark.parametrize("image_shape", [(8, 8, 1), (16, 16, 3), (32, 32, 3)])
def test_output_shapes(image_shape):
    model = EvalNet(ALL_OPS, channels=8, layers=5, num_classes=7, auxiliary=True)
    x = jax.ShapeDtypeStruct((3, *image_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(_rngs(), x), x)
    assert "aux_head" in variables["params"]

    def apply(v, x, train):
        return model.apply(v, x, train, mutable=["batch_stats"], rngs=_rngs(1))[0]

    out = jax.eval_shape(lambda v, x: apply(v, x, False), variables, x)
    assert out.shape == (3, 7) and out.dtype == jnp.float32
    logits, aux = jax.eval_shape(lambda v, x: apply(v, x, True), variables, x)
    assert logits.shape == aux.shape == (3, 7)


def test_aux_head_map_sizes():
    """Reference pool on 8-10 px maps, adaptive 2x2 pooling on others (2x2 up)."""
    head = AuxiliaryHead(5)
    for size in (2, 3, 4, 7, 8, 10, 11, 16):
        x = jax.ShapeDtypeStruct((2, size, size, 6), jnp.float32)
        v = jax.eval_shape(lambda x: head.init(jax.random.key(0), x, False), x)
        out = jax.eval_shape(lambda v, x: head.apply(v, x, False), v, x)
        assert out.shape == (2, 5), size
    with pytest.raises(ValueError, match="at least 2x2"):
        x = jax.ShapeDtypeStruct((2, 1, 1, 6), jnp.float32)
        jax.eval_shape(lambda x: head.init(jax.random.key(0), x, False), x)


def test_adaptive_pool_matches_torch_bins():
    from jaxdarts.evalnet import _adaptive_avg_pool

    x = np.arange(2 * 3 * 5 * 1, dtype=np.float32).reshape(2, 3, 5, 1)
    y = np.asarray(_adaptive_avg_pool(jnp.asarray(x), 2))
    # torch bins: rows [0, 2) and [1, 3) of 3; columns [0, 3) and [2, 5) of 5
    expect = [
        [x[:, 0:2, 0:3].mean((1, 2)), x[:, 0:2, 2:5].mean((1, 2))],
        [x[:, 1:3, 0:3].mean((1, 2)), x[:, 1:3, 2:5].mean((1, 2))],
    ]
    np.testing.assert_allclose(y, np.moveaxis(np.array(expect), (0, 1), (1, 2)))


# ---------------------------------------------------------------- behaviour

# One reduction cell: stride-1 skips (identity dropout) come from node inputs.
# Cheap ops only, to keep the compile short; test_output_shapes covers every op.
CHEAP = (
    ("conv_1x1", 0),
    ("noise", 1),
    ("skip_connect", 2),
    ("max_pool_3x3", 0),
    ("avg_pool_3x3", 3),
    ("skip_connect", 1),
    ("conv_3x3", 4),
    ("skip_connect", 3),
)
BEHAVIOUR = Genotype(CHEAP, (2, 3, 4, 5), CHEAP, (2, 3, 4, 5))
SMALL = dict(channels=4, layers=1, num_classes=10, impl="xla")


def _host_variables(model: EvalNet, x: jax.Array, seed: int = 0) -> dict:
    """Random variables of the model's shapes, drawn with NumPy (no compilation)."""
    shapes = jax.eval_shape(lambda x: model.init(_rngs(), x), x)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32),
        shapes["params"],
    )
    stats = jax.tree_util.tree_map_with_path(
        lambda p, s: (jnp.ones if p[-1].key == "var" else jnp.zeros)(s.shape),
        shapes["batch_stats"],
    )
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def small_outputs():
    """Outputs of one small network under several keys and drop-path settings."""
    model = EvalNet(
        BEHAVIOUR, auxiliary=True, identity_dropout=0.5, drop_path=0.3, **SMALL
    )
    x = jax.random.normal(jax.random.key(5), (4, 8, 8, 1))
    variables = _host_variables(model, x)

    def run(variables, x, seed, noise_seed, prob, train):
        rngs = _rngs(seed)
        rngs["noise"] = jax.random.key(noise_seed)
        out, _ = model.apply(
            variables,
            x,
            train,
            drop_path_prob=prob,
            mutable=["batch_stats"],
            rngs=rngs,
        )
        return out

    # Keys and probability are traced arguments: one compile per mode (vmapping over
    # them instead doubles XLA:CPU's compile time).
    f = jax.jit(run, static_argnums=5)
    # rows: (seed, noise seed, drop-path prob)
    rows = [(1, 0, 0.3), (1, 0, 0.3), (2, 0, 0.3), (1, 9, 0.3), (1, 0, 0.0)]
    out = {}
    for train in (False, True):
        outs = [f(variables, x, a, b, np.float32(c), train) for a, b, c in rows]
        out[train] = jax.tree.map(lambda *r: np.stack(r), *jax.device_get(outs))
    return out[False], out[True]


def test_eval_is_deterministic_and_has_no_aux(small_outputs):
    out, _ = small_outputs
    assert out.shape == (5, 4, 10)  # a single array in eval mode
    # dropout / drop-path keys and probabilities do not matter in eval mode
    for i in (1, 2, 4):
        np.testing.assert_array_equal(out[0], out[i])
    # ... the noise op draws from its own stream, in eval mode too
    assert not np.allclose(out[0], out[3])


def test_dropout_and_drop_path_only_in_training(small_outputs):
    _, (logits, aux) = small_outputs  # (logits, aux_logits) in training
    assert logits.shape == aux.shape == (5, 4, 10)
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(aux))
    np.testing.assert_array_equal(logits[0], logits[1])  # same keys
    assert not np.allclose(logits[0], logits[2])  # other dropout / drop-path keys
    assert not np.allclose(logits[0], logits[4])  # drop-path off


def test_drop_path_function():
    x = jnp.ones((1000, 2, 2, 3))
    y = np.asarray(drop_path(jax.random.key(0), x, 0.25))
    per_sample = y.reshape(1000, -1)
    # every sample is either dropped (0) or scaled by 1 / keep = 4/3
    assert set(np.unique(per_sample.min(1))) <= {0.0, np.float32(4 / 3)}
    assert np.all(per_sample.min(1) == per_sample.max(1))
    assert 0.2 < np.mean(per_sample[:, 0] == 0) < 0.3


def test_bf16_compute():
    g = PUBLISHED["disc-acc"]
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    f32 = EvalNet(g, channels=4, layers=1, impl="xla")
    b16 = EvalNet(g, channels=4, layers=1, impl="xla", dtype=jnp.bfloat16)
    variables = _host_variables(f32, x)

    @jax.jit
    def both(v, x):
        kw = dict(mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
        a, _ = f32.apply(v, x, True, **kw)
        b, stats = b16.apply(v, x, True, **kw)
        return a, b, stats

    a, b, stats = both(variables, x)
    assert b.dtype == jnp.float32 and b.shape == (4, 10)  # logits come back float32
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(stats))
    assert np.all(np.isfinite(b))
    np.testing.assert_allclose(b, a, atol=0.1, rtol=0.1)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "normal, message",
    [
        ((("sep_conv_9x9", 0), ("skip_connect", 1)) * 4, "not a usable op"),
        ((("none", 0), ("skip_connect", 1)) * 4, "not a usable op"),
        ((("sep_conv_3x3", 0), ("skip_connect", 2)) * 4, "input 2 of node 0"),
        ((("sep_conv_3x3", 0), ("skip_connect", -1)) * 4, "input -1 of node 0"),
        ((("sep_conv_3x3", 0),) * 3, "pairs"),
    ],
)
def test_bad_genotype_is_refused(normal, message):
    g = PUBLISHED["disc-acc"]._replace(normal=normal)
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        EvalNet(g)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="positive"):
        EvalNet(PUBLISHED["disc-acc"], layers=0)
    with pytest.raises(ValueError, match="drop_path"):
        EvalNet(PUBLISHED["disc-acc"], drop_path=1.0)
