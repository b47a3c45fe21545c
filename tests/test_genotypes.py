"""Genotypes: published cells, round trips, derivation, validation and plots."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from jaxdarts.genotypes import (
    PUBLISHED,
    Genotype,
    derive_genotype,
    from_darts_string,
    from_json_dict,
    genotype_edge_ops,
    get_genotype,
    load_genotype,
    save_genotype_json,
    to_darts_string,
    to_json_dict,
    validate_genotype,
)
from jaxdarts.spaces import EDGE_INPUT, EDGE_NODE, NUM_EDGES, get_space

SENTINEL = 1e6
# first edge of each node (the reference implementation; docs/semantics.md)
FIRST_EDGE = (0, 2, 5, 9)
CONCAT = (2, 3, 4, 5)
DISCRETE = [name for name in PUBLISHED if name.startswith("disc-")]
# Two published cells list a node's pairs in ascending input order, which the
# reference produced only when the second edge had been given `none` and was then
# filled with the noise argmax (the reference implementation; docs/semantics.md). Alphas built from the pairs
# reproduce them up to the order of the two pairs inside a node.
ORDER_ONLY = {("disc-ckpt-acc", "reduce"), ("disc-ckpt-loss", "reduce")}


def edge_of(node: int, inp: int) -> int:
    return FIRST_EDGE[node] + inp


def sentinel_alphas(edge_ops, space, reduce: bool = False, seed: int = 0):
    """1e-3 N(0,1) noise with 1e6 on ``edge_ops[e]`` of every edge (as the env does)."""
    ops = get_space(space).ops(reduce)
    rng = np.random.default_rng(seed)
    alpha = 1e-3 * rng.standard_normal((NUM_EDGES, len(ops[0])))
    for e, op in enumerate(edge_ops):
        alpha[e, ops[e].index(op)] = SENTINEL
    return alpha


def edge_ops_from_pairs(pairs) -> list[str]:
    """The pair ops on the pair edges; ``none`` on every other edge of the node."""
    ops = ["none"] * NUM_EDGES
    for k, (op, inp) in enumerate(pairs):
        ops[edge_of(k // 2, inp)] = op
    return ops


def per_node(pairs):
    return [sorted(pairs[2 * n : 2 * n + 2]) for n in range(len(pairs) // 2)]


# --------------------------------------------------------------------------------------
# Published genotypes and round trips


def test_nine_published_genotypes():
    assert sorted(PUBLISHED) == sorted(
        [
            "disc-nwot",
            "disc-acc",
            "disc-loss",
            "disc-ckpt-acc",
            "disc-ckpt-loss",
            "cont-acc-step",
            "cont-loss-step",
            "cont-acc-grad-step",
            "cont-loss-grad-step",
        ]
    )
    for g in PUBLISHED.values():
        validate_genotype(g, "darts")
        assert len(g.normal) == len(g.reduce) == 8
        assert g.normal_concat == g.reduce_concat == CONCAT
    # the reference implementation: DISC_NWOT's "reduce" gene is all sep_conv_5x5.
    assert {op for op, _ in PUBLISHED["disc-nwot"].reduce} == {"sep_conv_5x5"}
    assert PUBLISHED["disc-nwot"].normal[:2] == (
        ("dil_conv_5x5", 1),
        ("dil_conv_5x5", 0),
    )


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_json_round_trip(name, tmp_path):
    g = PUBLISHED[name]
    d = to_json_dict(g, space="darts")
    assert d["space"] == "darts"
    assert from_json_dict(json.loads(json.dumps(d))) == g
    path = tmp_path / "run" / "genotype.json"
    save_genotype_json(path, g, space="darts", reward=1.5)
    on_disk = json.loads(path.read_text())
    assert on_disk["reward"] == 1.5
    assert from_darts_string(on_disk["genotype"]) == g
    assert load_genotype(str(path)) == g


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_darts_string_round_trip(name):
    g = PUBLISHED[name]
    text = to_darts_string(g)
    assert text.startswith("Genotype(normal=[(")
    assert "normal_concat=range(2, 6)" in text
    assert from_darts_string(text) == g
    assert load_genotype(text) == g


def test_darts_string_forms():
    g = PUBLISHED["cont-loss-step"]
    # The DARTS repository writes lists for the concats; positional fields work too.
    text = (
        f"Genotype(normal={list(g.normal)}, normal_concat=[2, 3, 4, 5], "
        f"reduce={list(g.reduce)}, reduce_concat=[2, 3, 4, 5])"
    )
    assert from_darts_string(text) == g
    positional = f"Genotype({list(g.normal)}, range(2,6), {list(g.reduce)}, range(2,6))"
    assert from_darts_string(positional) == g
    odd = g._replace(reduce_concat=(2, 3, 5))
    assert "reduce_concat=[2, 3, 5]" in to_darts_string(odd)
    assert from_darts_string(to_darts_string(odd)) == odd
    with pytest.raises(ValueError, match="cannot parse"):
        from_darts_string("Genotype(normal=[('sep_conv_3x3', 0)")


def test_load_genotype_by_name():
    assert load_genotype("disc-nwot") is PUBLISHED["disc-nwot"]
    assert load_genotype("DISC_NWOT") is PUBLISHED["disc-nwot"]
    assert get_genotype("CONT_ACC_GRAD_STEP") is PUBLISHED["cont-acc-grad-step"]
    with pytest.raises(ValueError) as err:
        load_genotype("disc-nope")
    assert "disc-nope" in str(err.value) and "disc-nwot" in str(err.value)


def test_load_genotype_files(tmp_path):
    g = PUBLISHED["disc-loss"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(to_json_dict(g)))
    assert load_genotype(str(plain)) == g
    nested = tmp_path / "nested.json"  # a results file holding the genotype dict
    nested.write_text(json.dumps({"reward": 0.3, "genotype": to_json_dict(g)}))
    assert load_genotype(str(nested)) == g
    with pytest.raises(FileNotFoundError):
        load_genotype(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_genotype(str(broken))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"normal": [["sep_conv_3x3", 0]]}))
    with pytest.raises(ValueError, match="normal.*reduce"):
        load_genotype(str(bad))


def test_json_space_is_checked():
    d = to_json_dict(PUBLISHED["disc-nwot"], space="darts")
    d["space"] = "s2"  # dil_conv_5x5 is not an S2 op
    with pytest.raises(ValueError, match="not in search space 's2'"):
        from_json_dict(d)


# --------------------------------------------------------------------------------------
# Derivation


@pytest.mark.parametrize("name", DISCRETE)
def test_sentinel_alphas_reproduce_published_discrete_genotypes(name):
    g = PUBLISHED[name]
    derived = derive_genotype(
        sentinel_alphas(edge_ops_from_pairs(g.normal), "darts", seed=1),
        sentinel_alphas(edge_ops_from_pairs(g.reduce), "darts", True, seed=2),
        "darts",
    )
    assert derived.normal_concat == derived.reduce_concat == CONCAT
    for cell in ("normal", "reduce"):
        got, want = getattr(derived, cell), getattr(g, cell)
        assert per_node(got) == per_node(want), cell
        if (name, cell) not in ORDER_ONLY:
            assert got == want, cell  # exactly, pairs listed (op, 1), (op, 0)


def test_order_only_cells_are_the_ascending_ones():
    # The exceptions above are exactly the cells with a node listed in ascending input
    # order; every other discrete node lists its higher input first.
    ascending = set()
    for name in DISCRETE:
        for cell in ("normal", "reduce"):
            pairs = getattr(PUBLISHED[name], cell)
            for n in range(4):
                (_, a), (_, b) = pairs[2 * n : 2 * n + 2]
                if a < b:
                    ascending.add((name, cell))
    assert ascending == ORDER_ONLY


def _lowest_non_none_expectation(edge_ops):
    """Independent rule: per node, the two lowest-index non-`none` edges, listed
    higher edge first (the published form)."""
    pairs = []
    for node in range(4):
        edges = [e for e in range(NUM_EDGES) if EDGE_NODE[e] == node]
        kept = [e for e in edges if edge_ops[e] != "none"][:2]
        for e in sorted(kept, reverse=True):
            pairs.append((edge_ops[e], EDGE_INPUT[e]))
    return tuple(pairs)


@pytest.mark.parametrize("seed", range(6))
def test_sentinels_wire_each_node_to_its_lowest_non_none_edges(seed):
    space = get_space("darts")
    rng = np.random.default_rng(100 + seed)
    cells = []
    for _ in range(2):
        edge_ops = []
        for node in range(4):
            n_edges = 2 + node
            while True:  # random actions, at least two non-`none` per node
                acts = rng.integers(0, space.num_ops, n_edges)
                if (acts != space.num_ops - 1).sum() >= 2:
                    break
            edge_ops += [space.primitives[a] for a in acts]
        cells.append(edge_ops)
    derived = derive_genotype(
        sentinel_alphas(cells[0], space, seed=seed),
        sentinel_alphas(cells[1], space, True, seed=seed + 50),
        space,
    )
    assert derived.normal == _lowest_non_none_expectation(cells[0])
    assert derived.reduce == _lowest_non_none_expectation(cells[1])


def test_none_is_never_chosen():
    # All-`none` sentinels, and soft alphas where `none` dominates every edge.
    for space in ("darts", "s3", "nas-bench-201"):
        sp = get_space(space)
        alpha = sentinel_alphas(["none"] * NUM_EDGES, sp)
        g = derive_genotype(alpha, alpha, sp)
        assert all(op != "none" for op, _ in g.normal + g.reduce)
        validate_genotype(g, sp)
        soft = np.random.default_rng(3).standard_normal((NUM_EDGES, sp.num_ops))
        soft[:, sp.primitives.index("none")] += 5.0
        g = derive_genotype(soft, soft, sp)
        assert all(op != "none" for op, _ in g.normal + g.reduce)


def test_ties_go_to_the_lowest_edge():
    # Uniform alphas: every edge ties; each node keeps its two lowest edges,
    # i.e. inputs 0 and 1, listed (op, 1), (op, 0); ops tie to the lowest index.
    g = derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)), "darts")
    assert g.normal == (("sep_conv_3x3", 1), ("sep_conv_3x3", 0)) * 4
    # Node 3 with equal alphas on edges 11 and 13 and weaker ones elsewhere: both
    # win, and equal weights are listed higher edge first.
    alpha = np.zeros((14, 8))
    alpha[11, 2] = alpha[13, 2] = 3.0
    g = derive_genotype(alpha, alpha, "darts")
    assert g.normal[6:] == (("dil_conv_3x3", 4), ("dil_conv_3x3", 2))
    alpha[12, 3] = 3.0  # now 11, 12 and 13 tie: 11 and 12 win
    g = derive_genotype(alpha, alpha, "darts")
    assert g.normal[6:] == (("dil_conv_5x5", 3), ("dil_conv_3x3", 2))


def test_s3_labels_are_right():
    # the reference implementation: the reference reports a chosen sep_conv_3x3 as skip_connect
    # and a chosen skip_connect as none. jaxdarts labels them correctly.
    sp = get_space("s3")
    edge_ops = ["sep_conv_3x3", "skip_connect"] * 7
    g = derive_genotype(
        sentinel_alphas(edge_ops, sp), sentinel_alphas(edge_ops[::-1], sp), sp
    )
    assert g.normal[:2] == (("skip_connect", 1), ("sep_conv_3x3", 0))
    assert g.reduce[:2] == (("sep_conv_3x3", 1), ("skip_connect", 0))
    for (op, inp), k in zip(g.normal, range(8), strict=True):
        assert op == edge_ops[edge_of(k // 2, inp)]
    validate_genotype(g, "s3")
    assert {op for op, _ in g.normal + g.reduce} == {"sep_conv_3x3", "skip_connect"}


def test_s1_labels_come_from_the_per_edge_lists():
    sp = get_space("s1")
    normal = np.zeros((14, 2))
    normal[:, 1] = SENTINEL  # action 1 everywhere
    reduce = np.zeros((14, 2))
    reduce[:, 0] = SENTINEL  # action 0 everywhere
    g = derive_genotype(normal, reduce, sp)
    # Normal node 0: edge 1 (skip, dil5) and edge 0 (skip, dil3), action 1.
    assert g.normal[:2] == (("dil_conv_5x5", 1), ("dil_conv_3x3", 0))
    # Normal node 1: edges 3 (skip, sep3) and 2 (skip, dil5).
    assert g.normal[2:4] == (("sep_conv_3x3", 1), ("dil_conv_5x5", 0))
    # Normal node 2: edges 6 (skip, sep3) and 5 (max_pool, skip).
    assert g.normal[4:6] == (("sep_conv_3x3", 1), ("skip_connect", 0))
    # Reduce, action 0: node 0 max_pool on both; node 3 edges 10, 9.
    assert g.reduce[:2] == (("max_pool_3x3", 1), ("max_pool_3x3", 0))
    assert g.reduce[6:] == (("max_pool_3x3", 1), ("max_pool_3x3", 0))
    for cell, ops in ((g.normal, sp.normal), (g.reduce, sp.reduce)):
        act = 1 if cell is g.normal else 0
        for k, (op, inp) in enumerate(cell):
            assert op == ops[edge_of(k // 2, inp)][act]


def _numpy_soft_genotype(alpha, ops):
    """Independent reference: top-2 edges per node by the largest softmax weight of a
    non-`none` op (stable: lowest edge first), listed by descending weight."""
    w = np.exp(alpha - alpha.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    masked = np.where(np.array(ops) == "none", -np.inf, w)
    best_op = masked.argmax(1)
    best_w = masked.max(1)
    pairs = []
    for node in range(4):
        edges = np.arange(FIRST_EDGE[node], FIRST_EDGE[node] + 2 + node)
        order = edges[np.argsort(-best_w[edges], kind="stable")][:2]
        for e in sorted(order, key=lambda e: -best_w[e]):
            pairs.append((ops[e][best_op[e]], int(e - FIRST_EDGE[node])))
    return tuple(pairs)


@pytest.mark.parametrize("space", ["darts", "s1", "s3"])
@pytest.mark.parametrize("seed", range(4))
def test_soft_alphas_match_numpy(space, seed):
    sp = get_space(space)
    rng = np.random.default_rng(seed)
    an = rng.standard_normal((14, sp.num_ops))
    ar = 2.0 * rng.standard_normal((14, sp.num_ops))
    g = derive_genotype(an, ar, sp)
    assert g.normal == _numpy_soft_genotype(an, sp.normal)
    assert g.reduce == _numpy_soft_genotype(ar, sp.reduce)
    w = np.exp(an) / np.exp(an).sum(1, keepdims=True)
    for node in range(4):  # listed by descending weight
        (op0, i0), (op1, i1) = g.normal[2 * node : 2 * node + 2]
        e0, e1 = edge_of(node, i0), edge_of(node, i1)
        w0 = w[e0, list(sp.normal[e0]).index(op0)]
        w1 = w[e1, list(sp.normal[e1]).index(op1)]
        assert w0 >= w1


def test_derive_checks_shapes():
    with pytest.raises(ValueError, match=r"\(14, 8\)"):
        derive_genotype(np.zeros((14, 7)), np.zeros((14, 8)), "darts")
    with pytest.raises(ValueError, match="unknown search space"):
        derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)), "s7")


def test_op_of_a_none_dominated_edge_is_its_strongest_other_op():
    alpha = np.zeros((14, 8))
    alpha[0, 0] = SENTINEL  # edge 0: sep_conv_3x3
    alpha[1, 7] = SENTINEL  # edge 1: none, but dil_conv_5x5 is the next strongest
    alpha[1, 3] = 1.0
    g = derive_genotype(alpha, alpha, "darts")
    # Node 0 needs both edges; the softmax weight of dil_conv_5x5 on edge 1,
    # exp(1 - 1e6) / Z, is larger than that of every other non-`none` op there.
    assert g.normal[:2] == (("sep_conv_3x3", 0), ("dil_conv_5x5", 1))


def test_filling_edge_is_ranked_by_its_exact_weight():
    alpha = np.zeros((14, 8))
    alpha[2, 1] = SENTINEL  # node 1: edge 2 sep_conv_5x5
    alpha[3, 7] = alpha[4, 7] = SENTINEL  # edges 3 and 4: none
    alpha[4, 5] = 2.0  # edge 4's avg_pool is far stronger than anything on edge 3
    g = derive_genotype(alpha, alpha, "darts")
    assert g.normal[2:4] == (("sep_conv_5x5", 0), ("avg_pool_3x3", 2))


# --------------------------------------------------------------------------------------
# Validation and edge mapping


def _with(cell_pairs, **kw) -> Genotype:
    return PUBLISHED["cont-acc-step"]._replace(normal=tuple(cell_pairs), **kw)


@pytest.mark.parametrize(
    "genotype, pattern",
    [
        (
            _with((("conv_9x9", 1),) + PUBLISHED["cont-acc-step"].normal[1:]),
            r"normal\[0\].*'conv_9x9'",
        ),
        (
            _with(PUBLISHED["cont-acc-step"].normal[:3] + (("none", 0),) * 5),
            r"normal\[3\].*'none'",
        ),
        (
            _with((("sep_conv_3x3", 2),) + PUBLISHED["cont-acc-step"].normal[1:]),
            r"normal\[0\]: input 2 of node 0 must be in \[0, 1\]",
        ),
        (
            _with(PUBLISHED["cont-acc-step"].normal[:7] + (("skip_connect", 5),)),
            r"input 5 of node 3 must be in \[0, 4\]",
        ),
        (
            _with(PUBLISHED["cont-acc-step"].normal[:7] + (("skip_connect", -1),)),
            r"input -1 of node 3",
        ),
        (
            _with(PUBLISHED["cont-acc-step"].normal[:7]),
            r"genotype.normal needs 8 \(op, input\) pairs \(2 per node\), got 7",
        ),
        (_with(()), r"genotype.normal needs 8 .* got 0"),
        (
            PUBLISHED["cont-acc-step"]._replace(reduce_concat=(2, 3, 6)),
            r"reduce_concat \[2, 3, 6\] must index 0..5",
        ),
        (
            PUBLISHED["cont-acc-step"]._replace(normal_concat=()),
            r"normal_concat \[\] must index",
        ),
    ],
)
def test_validate_rejects_with_a_message(genotype, pattern):
    with pytest.raises(ValueError, match=pattern):
        validate_genotype(genotype)


def test_validate_against_a_space():
    g = PUBLISHED["disc-nwot"]
    assert validate_genotype(g) is g
    assert validate_genotype(g, "darts") is g
    with pytest.raises(ValueError, match="'dil_conv_5x5' is not in search space 's3'"):
        validate_genotype(g, "s3")


def test_validate_rejects_a_cell_without_four_nodes():
    g = PUBLISHED["cont-acc-step"]
    with pytest.raises(ValueError, match="pairs"):
        validate_genotype(g._replace(normal=g.normal[:6], normal_concat=(2, 3, 4)))


def test_validate_accepts_numpy_integer_inputs():
    g = PUBLISHED["disc-nwot"]
    pairs = tuple((op, np.int64(i)) for op, i in g.normal)
    validate_genotype(g._replace(normal=pairs))


def test_genotype_edge_ops_maps_pairs_to_the_14_edges():
    normal, reduce = genotype_edge_ops(PUBLISHED["disc-loss"])
    # Normal: mp1 mp0 | mp1 mp0 | mp1 d50 | ap1 s30.
    assert normal == (
        "max_pool_3x3", "max_pool_3x3",
        "max_pool_3x3", "max_pool_3x3", None,
        "dil_conv_5x5", "max_pool_3x3", None, None,
        "sep_conv_3x3", "avg_pool_3x3", None, None, None,
    )  # fmt: skip
    # Reduce: d31 ap0 | s31 ap0 | s32 sk0 | d31 ap0.
    assert reduce == (
        "avg_pool_3x3", "dil_conv_3x3",
        "avg_pool_3x3", "sep_conv_3x3", None,
        "skip_connect", None, "sep_conv_3x3", None,
        "avg_pool_3x3", "dil_conv_3x3", None, None, None,
    )  # fmt: skip
    for g in PUBLISHED.values():
        for pairs, ops in zip((g.normal, g.reduce), genotype_edge_ops(g), strict=True):
            distinct = {(k // 2, i) for k, (_, i) in enumerate(pairs)}
            assert sum(op is not None for op in ops) == len(distinct)
            for k, (_, inp) in enumerate(pairs):
                e = edge_of(k // 2, inp)
                assert EDGE_NODE[e] == k // 2 and EDGE_INPUT[e] == inp
                assert ops[e] is not None


def test_two_pairs_of_a_node_from_one_input_are_refused_everywhere():
    # score (edge ops) and train (EvalNet) must build the same network: both refuse.
    g = PUBLISHED["disc-acc"]._replace(
        normal=(("skip_connect", 1), ("sep_conv_3x3", 1))
        + PUBLISHED["disc-acc"].normal[2:]
    )
    with pytest.raises(ValueError, match="node 0 takes both 'skip_connect' and"):
        genotype_edge_ops(g)
    with pytest.raises(ValueError, match="different inputs"):
        from_darts_string(to_darts_string(g))
    for name in PUBLISHED:  # published genotypes never repeat an input
        validate_genotype(PUBLISHED[name])


def test_edge_ops_and_sentinels_round_trip_for_canonical_genotypes():
    # Sentinels on genotype_edge_ops (`none` elsewhere) give the genotype back.
    for name in DISCRETE:
        g = PUBLISHED[name]
        normal, reduce = genotype_edge_ops(g)
        derived = derive_genotype(
            sentinel_alphas([o or "none" for o in normal], "darts"),
            sentinel_alphas([o or "none" for o in reduce], "darts", True),
            "darts",
        )
        assert per_node(derived.normal) == per_node(g.normal)
        assert per_node(derived.reduce) == per_node(g.reduce)


# --------------------------------------------------------------------------------------
# Plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
S3_GENOTYPE = Genotype(
    normal=(
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 2),
        ("skip_connect", 1),
        ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 0),
        ("skip_connect", 4),
        ("sep_conv_3x3", 2),
    ),
    normal_concat=CONCAT,
    reduce=(
        ("skip_connect", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 2),
        ("skip_connect", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
    ),
    reduce_concat=CONCAT,
)


def _check_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 8000 and 250 <= height <= 8000, (width, height)
    assert width > height  # two cells side by side
    return width, height


def _svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return ["".join(el.itertext()) for el in root.iter() if el.tag.endswith("}text")]


@pytest.mark.parametrize(
    "name, genotype",
    [*sorted(PUBLISHED.items()), ("s3", S3_GENOTYPE)],
    ids=[*sorted(PUBLISHED), "s3"],
)
def test_plot_genotype_writes_png_and_svg(name, genotype, tmp_path):
    from jaxdarts.plotting import plot_genotype

    png, svg = plot_genotype(genotype, tmp_path / "plots" / name, title=name)
    assert png == tmp_path / "plots" / f"{name}.png"
    assert svg == tmp_path / "plots" / f"{name}.svg"
    _check_png(png)
    texts = _svg_texts(svg)
    for op, _ in genotype.normal + genotype.reduce:
        assert op in texts
    # One label per pair, plus the titles.
    op_names = {op for op, _ in genotype.normal + genotype.reduce}
    n_labels = sum(t in op_names for t in texts)
    assert n_labels == 16
    assert {"normal cell", "reduction cell", name} <= set(texts)
    assert not [p for p in png.parent.iterdir() if p.name.startswith(".tmp")]


def test_plot_genotype_suffix_and_overwrite(tmp_path):
    from jaxdarts.plotting import plot_genotype

    g = PUBLISHED["disc-acc"]
    png, svg = plot_genotype(g, tmp_path / "cells.png")  # suffix dropped, no title
    assert (png.name, svg.name) == ("cells.png", "cells.svg")
    first = png.read_bytes()
    plot_genotype(g, str(tmp_path / "cells"))  # str stems work and overwrite
    assert png.read_bytes() == first  # deterministic output
    with pytest.raises(ValueError, match="input 2 of node 0"):
        plot_genotype(
            g._replace(normal=(("skip_connect", 2),) + g.normal[1:]), tmp_path / "x"
        )
    assert not (tmp_path / "x.png").exists()


def test_plot_genotypes_grid(tmp_path):
    from jaxdarts.plotting import plot_genotypes_grid

    named = {"disc-nwot": PUBLISHED["disc-nwot"], "s3-demo": S3_GENOTYPE}
    png, svg = plot_genotypes_grid(named, tmp_path / "grid", title="two")
    width, height = _check_png(png)
    assert height > 500
    texts = _svg_texts(svg)
    assert {"disc-nwot", "s3-demo", "two"} <= set(texts)
    assert texts.count("normal cell") == texts.count("reduction cell") == 2
    with pytest.raises(ValueError, match="at least one"):
        plot_genotypes_grid({}, tmp_path / "empty")


def test_importing_plotting_does_not_import_matplotlib():
    code = "import sys, jaxdarts.plotting; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "False"
