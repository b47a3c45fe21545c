"""Search spaces: edge tables, op lists (the discrete action order) and lookup."""

from __future__ import annotations

import pytest

from jaxdarts.spaces import (
    ALL_OPS,
    EDGE_INPUT,
    EDGE_NODE,
    NUM_EDGES,
    NUM_NODES,
    SPACES,
    SearchSpace,
    get_space,
)

# the reference implementation: node 0 <- edges 0, 1 (from c_{k-2}, c_{k-1}); node 1 <- 2, 3, 4
# (c_{k-2}, c_{k-1}, n0); node 2 <- 5..8; node 3 <- 9..13. Written out by hand.
EXPECTED_EDGES = [
    (0, 0), (0, 1),
    (1, 0), (1, 1), (1, 2),
    (2, 0), (2, 1), (2, 2), (2, 3),
    (3, 0), (3, 1), (3, 2), (3, 3), (3, 4),
]  # fmt: skip

# the reference implementation: the order is the discrete action index.
DARTS_OPS = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "skip_connect",
    "avg_pool_3x3",
    "max_pool_3x3",
    "none",
)

# the reference implementation, the S1 table, transcribed row by row: (normal pair, reduce pair).
SK, MP, AP = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
S3x3, D3, D5 = "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"
S1_TABLE = [
    ((SK, D3), (MP, AP)),
    ((SK, D5), (MP, D3)),
    ((SK, D5), (MP, AP)),
    ((SK, S3x3), (MP, AP)),
    ((SK, D3), (SK, D5)),
    ((MP, SK), (MP, AP)),
    ((SK, S3x3), (MP, S3x3)),
    ((SK, S3x3), (SK, D3)),
    ((SK, D3), (SK, D5)),
    ((SK, S3x3), (MP, AP)),
    ((MP, SK), (MP, AP)),
    ((SK, D3), (SK, D5)),
    ((D3, D5), (SK, D5)),
    ((D3, D5), (SK, D5)),
]


def test_edge_tables():
    assert NUM_NODES == 4
    assert NUM_EDGES == 14
    assert list(zip(EDGE_NODE, EDGE_INPUT, strict=True)) == EXPECTED_EDGES
    for node in range(NUM_NODES):
        edges = [e for e in range(NUM_EDGES) if EDGE_NODE[e] == node]
        assert len(edges) == 2 + node
        # Node i reads every earlier state exactly once, in order.
        assert [EDGE_INPUT[e] for e in edges] == list(range(2 + node))
        # Edges of a node are contiguous.
        assert edges == list(range(edges[0], edges[0] + 2 + node))


def test_darts_space_order_defines_actions():
    space = get_space("darts")
    assert space.num_ops == 8
    assert space.uniform
    assert space.primitives == DARTS_OPS
    # Action a on edge e puts space.normal[e][a] there.
    assert space.normal[0][0] == "sep_conv_3x3"
    assert space.normal[13][4] == "skip_connect"
    assert space.reduce[7][7] == "none"
    assert all(ops == DARTS_OPS for ops in space.normal + space.reduce)


@pytest.mark.parametrize(
    "name, ops",
    [
        ("s2", ("skip_connect", "sep_conv_3x3")),
        ("s3", ("none", "skip_connect", "sep_conv_3x3")),
        ("s4", ("noise", "sep_conv_3x3")),
        (
            "nas-bench-201",
            ("none", "conv_1x1", "conv_3x3", "avg_pool_3x3", "skip_connect"),
        ),
    ],
)
def test_uniform_robustdarts_spaces(name, ops):
    space = get_space(name)
    assert space.uniform
    assert space.primitives == ops
    assert space.num_ops == len(ops)
    assert len(space.normal) == len(space.reduce) == NUM_EDGES
    assert all(e == ops for e in space.normal + space.reduce)


def test_s1_per_edge_pairs_match_reference_table():
    space = get_space("s1")
    assert space.num_ops == 2
    assert not space.uniform
    for e, (normal, reduce) in enumerate(S1_TABLE):
        assert space.normal[e] == normal, f"normal edge {e}"
        assert space.reduce[e] == reduce, f"reduce edge {e}"
    # A few rows by hand, with the table's "(from)" column in mind.
    assert space.normal[5] == ("max_pool_3x3", "skip_connect")  # n2 <- c_{k-2}
    assert space.normal[12] == ("dil_conv_3x3", "dil_conv_5x5")  # n3 <- n1
    assert space.reduce[1] == ("max_pool_3x3", "dil_conv_3x3")  # n0 <- c_{k-1}
    assert space.reduce[6] == ("max_pool_3x3", "sep_conv_3x3")  # n2 <- c_{k-1}
    assert space.reduce[13] == ("skip_connect", "dil_conv_5x5")  # n3 <- n2
    assert "none" not in space.distinct_ops()
    with pytest.raises(ValueError, match="different ops per edge"):
        _ = space.primitives


@pytest.mark.parametrize(
    "name, obs_size", [("darts", 224), ("s1", 56), ("s2", 56), ("s3", 84), ("s4", 56)]
)
def test_observation_sizes(name, obs_size):
    # the reference implementation: softmax(alpha_normal) and softmax(alpha_reduce), flattened.
    space = get_space(name)
    assert 2 * NUM_EDGES * space.num_ops == obs_size


@pytest.mark.parametrize(
    "query, name",
    [
        ("darts", "darts"),
        ("DARTS", "darts"),
        ("S3", "s3"),
        ("nas-bench-201", "nas-bench-201"),
        ("nas_bench_201", "nas-bench-201"),
        ("nb201", "nas-bench-201"),
    ],
)
def test_lookup_by_name(query, name):
    space = get_space(query)
    assert space.name == name
    assert space is SPACES[name]
    assert get_space(space) is space


def test_unknown_space_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_space("s9")
    msg = str(err.value)
    assert "'s9'" in msg
    for name in ("darts", "s1", "s2", "s3", "s4", "nas-bench-201"):
        assert name in msg


def test_every_space_uses_known_ops_only():
    for space in SPACES.values():
        assert set(space.distinct_ops()) <= set(ALL_OPS)
        table = space.op_index_table(reduce=False)
        assert table.shape == (NUM_EDGES, space.num_ops)
        names = space.distinct_ops()
        for e in range(NUM_EDGES):
            assert tuple(names[i] for i in table[e]) == space.normal[e]


def test_search_space_rejects_malformed_tables():
    ops = ("skip_connect", "sep_conv_3x3")
    with pytest.raises(ValueError, match="14 edges"):
        SearchSpace("bad", (ops,) * 13, (ops,) * 14)
    with pytest.raises(ValueError, match="as many ops"):
        SearchSpace("bad", (ops,) * 13 + (ops[:1],), (ops,) * 14)
    with pytest.raises(ValueError, match="conv_9x9"):
        SearchSpace("bad", (("conv_9x9", "none"),) * 14, (ops,) * 14)
    with pytest.raises(ValueError, match="op counts differ"):
        SearchSpace("bad", (ops,) * 14, ((*ops, "none"),) * 14)
