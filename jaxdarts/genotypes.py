"""Genotypes: the discrete cells a search ends with, as data.

A :class:`Genotype` is the DARTS form: for each of the 4 nodes of a cell, two
``(op, input)`` pairs, where ``input`` 0 / 1 are the cell inputs c_{k-2} / c_{k-1} and
``2 + i`` is intermediate node ``i``; ``*_concat`` lists the concatenated states.

References:
  Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019 (genotypes.py).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxdarts.spaces import (
    EDGE_INPUT,
    EDGE_NODE,
    NUM_EDGES,
    NUM_NODES,
    SearchSpace,
    get_space,
)

__all__ = [
    "Genotype",
    "PUBLISHED",
    "get_genotype",
    "derive_genotype",
    "genotype_edge_ops",
    "validate_genotype",
    "to_json_dict",
    "from_json_dict",
    "to_darts_string",
    "from_darts_string",
    "load_genotype",
    "save_genotype_json",
]

Pair = tuple[str, int]


class Genotype(NamedTuple):
    """DARTS genotype: 8 ``(op, input)`` pairs per cell, in node order."""

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]


def _g(normal: Sequence[Pair], reduce: Sequence[Pair]) -> Genotype:
    concat = tuple(range(2, 2 + NUM_NODES))
    return Genotype(
        tuple((str(o), int(i)) for o, i in normal),
        concat,
        tuple((str(o), int(i)) for o, i in reduce),
        concat,
    )


def _pairs(spec: str) -> tuple[Pair, ...]:
    """'a1 b0 c1 ...' -> (('a', 1), ('b', 0), ...) with short op codes."""
    short = {
        "s3": "sep_conv_3x3",
        "s5": "sep_conv_5x5",
        "d3": "dil_conv_3x3",
        "d5": "dil_conv_5x5",
        "sk": "skip_connect",
        "ap": "avg_pool_3x3",
        "mp": "max_pool_3x3",
    }
    return tuple((short[t[:-1]], int(t[-1])) for t in spec.split())


# The nine genotypes published with the paper (reference code model/genotypes.py),
# named after the variants that found them. Note that because of the reference's
# normal/reduce swap (the reference implementation; docs/semantics.md) the "reduce" gene of the discrete variants was
# chosen while acting on the supernet's normal positions.
PUBLISHED: dict[str, Genotype] = {
    "disc-nwot": _g(
        _pairs("d51 d50 s51 mp0 sk1 d50 mp1 mp0"),
        _pairs("s51 s50 s51 s50 s51 s50 s51 s50"),
    ),
    "disc-acc": _g(
        _pairs("ap1 ap0 ap1 ap0 ap1 ap0 ap1 ap0"),
        _pairs("d31 d30 ap1 d30 d31 d30 s51 mp0"),
    ),
    "disc-loss": _g(
        _pairs("mp1 mp0 mp1 mp0 mp1 d50 ap1 s30"),
        _pairs("d31 ap0 s31 ap0 s32 sk0 d31 ap0"),
    ),
    "disc-ckpt-acc": _g(
        _pairs("s51 s50 s51 s50 ap1 s50 ap1 ap0"),
        _pairs("d50 s51 mp0 d51 mp2 s50 mp1 mp0"),
    ),
    "disc-ckpt-loss": _g(
        _pairs("sk1 sk0 sk1 sk0 sk1 sk0 sk1 sk0"),
        _pairs("sk1 d50 d50 sk1 mp0 d52 d52 sk3"),
    ),
    "cont-acc-step": _g(
        _pairs("mp1 s50 mp0 s52 s51 d30 ap3 ap0"),
        _pairs("s51 ap0 ap2 mp1 mp2 mp1 s52 s54"),
    ),
    "cont-loss-step": _g(
        _pairs("s50 s31 mp0 sk1 d51 mp0 s32 mp4"),
        _pairs("d51 mp0 mp2 s31 mp2 s51 s34 s31"),
    ),
    "cont-acc-grad-step": _g(
        _pairs("d30 d31 mp1 s52 s53 mp1 d31 ap3"),
        _pairs("ap1 ap0 s50 s52 d32 d31 ap3 d31"),
    ),
    "cont-loss-grad-step": _g(
        _pairs("s30 sk1 d51 d52 s53 ap1 d53 mp0"),
        _pairs("s50 sk1 s51 d52 ap3 ap0 s52 d53"),
    ),
}


def get_genotype(name: str) -> Genotype:
    """A published genotype by variant name (``disc-nwot``; ``DISC_NWOT`` also works)."""
    key = name.strip().lower().replace("_", "-")
    if key not in PUBLISHED:
        raise ValueError(
            f"unknown genotype {name!r}; published ones are {sorted(PUBLISHED)}"
        )
    return PUBLISHED[key]


def validate_genotype(
    genotype: Genotype, space: SearchSpace | str | None = None
) -> Genotype:
    """Checks ops and wiring; returns the genotype.

    Raises:
      ValueError: naming the first bad op, input index (also two pairs of a node
        from the same input) or concat entry.
    """
    from jaxdarts.ops import OPS

    for cell in ("normal", "reduce"):
        pairs = getattr(genotype, cell)
        if len(pairs) != 2 * NUM_NODES:
            raise ValueError(
                f"genotype.{cell} needs {2 * NUM_NODES} (op, input) pairs "
                f"(2 per node), got {len(pairs)}"
            )
        for k, (op, idx) in enumerate(pairs):
            node = k // 2
            if op not in OPS or op in ("none",):
                raise ValueError(
                    f"genotype.{cell}[{k}]: op {op!r} is not a usable op; use one of "
                    f"{sorted(o for o in OPS if o != 'none')}"
                )
            if space is not None and op not in get_space(space).distinct_ops():
                raise ValueError(
                    f"genotype.{cell}[{k}]: op {op!r} is not in search space "
                    f"{get_space(space).name!r}"
                )
            if not isinstance(idx, (int, np.integer)) or not 0 <= idx < node + 2:
                raise ValueError(
                    f"genotype.{cell}[{k}]: input {idx!r} of node {node} must be in "
                    f"[0, {node + 1}] (0, 1 = cell inputs, 2+i = node i)"
                )
        _check_distinct_inputs(pairs, cell)
        concat = getattr(genotype, f"{cell}_concat")
        n_states = 2 + len(pairs) // 2
        if not concat or any(not 0 <= int(c) < n_states for c in concat):
            raise ValueError(
                f"genotype.{cell}_concat {list(concat)} must index 0..{n_states - 1}"
            )
    return genotype


def _check_distinct_inputs(pairs: Sequence[Pair], cell: str) -> None:
    """The two pairs of a node must read different inputs: a DARTS cell has one
    edge per (input, node), which a genotype derived from alphas never repeats."""
    for node in range(len(pairs) // 2):
        (op_a, a), (op_b, b) = pairs[2 * node], pairs[2 * node + 1]
        if a == b:
            raise ValueError(
                f"genotype.{cell}[{2 * node}:{2 * node + 2}]: node {node} takes both "
                f"{op_a!r} and {op_b!r} from input {a}; a DARTS cell has one edge per "
                "(input, node), so the two pairs of a node need different inputs"
            )


def _log_softmax(a: np.ndarray) -> np.ndarray:
    # Log-weights: ordering stays exact where a 1e6 sentinel underflows the weights.
    a = np.asarray(a, np.float64)
    m = a.max(-1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(-1, keepdims=True))


def _derive_cell(
    alpha: np.ndarray, ops: Sequence[Sequence[str]], k: int = 2
) -> tuple[Pair, ...]:
    w = _log_softmax(alpha)
    pairs: list[Pair] = []
    for node in range(NUM_NODES):
        edges = [e for e in range(NUM_EDGES) if EDGE_NODE[e] == node]
        best = []  # (weight, edge, op) of the strongest non-`none` op per edge
        for e in edges:
            cand = [(w[e, a], a) for a, name in enumerate(ops[e]) if name != "none"]
            if not cand:
                continue
            # Highest weight, lowest op index on ties.
            wt, a = max(cand, key=lambda t: (t[0], -t[1]))
            best.append((wt, e, a))
        best.sort(key=lambda t: (-t[0], t[1]))  # ties: lowest edge index
        # Listed by weight, ties by descending edge index: the published form.
        for _wt, e, a in sorted(best[:k], key=lambda t: (-t[0], -t[1])):
            pairs.append((ops[e][a], EDGE_INPUT[e]))
    return tuple(pairs)


def derive_genotype(alpha_normal, alpha_reduce, space: SearchSpace | str) -> Genotype:
    """Discretises architecture parameters into a genotype (docs/semantics.md).

    Each node keeps its 2 incoming edges with the largest softmax weight of a non-`none`
    op, ties going to the lowest edge index; each kept edge carries that op (ties to the
    lowest op index). Pairs are listed per node in edge order, so sentinel alphas wire
    every node to its lowest-index non-`none` edges and list them as the published
    genotypes do (``(op, 1), (op, 0)``).

    Args:
      alpha_normal: ``[14, num_ops]`` normal-cell alphas (raw logits).
      alpha_reduce: ``[14, num_ops]`` reduction-cell alphas.
      space: the search space (labels come from its per-edge op lists).
    """
    space = get_space(space)
    an, ar = np.asarray(alpha_normal), np.asarray(alpha_reduce)
    expect = (NUM_EDGES, space.num_ops)
    if an.shape != expect or ar.shape != expect:
        raise ValueError(
            f"alphas must have shape {expect}, got {an.shape} and {ar.shape}"
        )
    concat = tuple(range(2, 2 + NUM_NODES))
    return Genotype(
        _derive_cell(an, space.normal), concat, _derive_cell(ar, space.reduce), concat
    )


def genotype_edge_ops(
    genotype: Genotype,
) -> tuple[tuple[str | None, ...], tuple[str | None, ...]]:
    """Per-edge op names (``None`` = no edge) of both cells, in the 14-edge order.

    A genotype with two pairs from the same input to one node keeps the first.
    """
    validate_genotype(genotype)
    out = []
    for pairs in (genotype.normal, genotype.reduce):
        if len(pairs) != 2 * NUM_NODES:
            raise ValueError(
                f"a supernet genotype needs {2 * NUM_NODES} pairs per cell"
            )
        ops: list[str | None] = [None] * NUM_EDGES
        for k, (op, idx) in enumerate(pairs):
            node = k // 2
            e = next(
                e
                for e in range(NUM_EDGES)
                if EDGE_NODE[e] == node and EDGE_INPUT[e] == idx
            )
            if ops[e] is None:
                ops[e] = op
        out.append(tuple(ops))
    return out[0], out[1]


def to_json_dict(genotype: Genotype, space: str | None = None) -> dict[str, Any]:
    """JSON-ready dict: ``normal``/``reduce`` lists of ``[op, input]``, the concats, space."""
    d: dict[str, Any] = {
        "normal": [[op, i] for op, i in genotype.normal],
        "normal_concat": list(genotype.normal_concat),
        "reduce": [[op, i] for op, i in genotype.reduce],
        "reduce_concat": list(genotype.reduce_concat),
    }
    if space is not None:
        d["space"] = get_space(space).name
    return d


def from_json_dict(d: dict[str, Any]) -> Genotype:
    """Inverse of :func:`to_json_dict` (validates the result)."""
    try:
        g = Genotype(
            tuple((str(op), int(i)) for op, i in d["normal"]),
            tuple(int(c) for c in d.get("normal_concat", range(2, 6))),
            tuple((str(op), int(i)) for op, i in d["reduce"]),
            tuple(int(c) for c in d.get("reduce_concat", range(2, 6))),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            "a genotype JSON needs 'normal' and 'reduce' lists of [op, input] pairs "
            f"(and optionally *_concat): {e}"
        ) from e
    return validate_genotype(g, d.get("space"))


def to_darts_string(genotype: Genotype) -> str:
    """The DARTS repr, e.g. ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), ...)``."""

    def concat(c):
        c = list(c)
        if c == list(range(c[0], c[-1] + 1)):
            return f"range({c[0]}, {c[-1] + 1})"
        return repr(c)

    return (
        f"Genotype(normal={list(genotype.normal)!r}, normal_concat={concat(genotype.normal_concat)}, "
        f"reduce={list(genotype.reduce)!r}, reduce_concat={concat(genotype.reduce_concat)})"
    )


def from_darts_string(text: str) -> Genotype:
    """Parses the DARTS repr (``range(a, b)`` or lists for the concats)."""
    text = re.sub(
        r"range\((\d+),\s*(\d+)\)",
        lambda m: repr(list(range(int(m[1]), int(m[2])))),
        text,
    )
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call):
            raise ValueError("not a Genotype(...) call")
        fields = list(Genotype._fields)
        if len(call.args) > len(fields):
            raise ValueError(f"at most {len(fields)} positional fields")
        unknown = [k.arg for k in call.keywords if k.arg not in fields]
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; the fields are {fields}")
        kw = {fields[i]: ast.literal_eval(a) for i, a in enumerate(call.args)}
        kw.update({k.arg: ast.literal_eval(k.value) for k in call.keywords})
        return from_json_dict(kw)
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"cannot parse genotype string {text[:80]!r}...: {e}") from e


def save_genotype_json(
    path, genotype: Genotype, space: str | None = None, **extra
) -> None:
    """Writes ``to_json_dict`` (plus ``genotype`` = the DARTS string and any extras) atomically."""
    from jaxdarts.io import atomic_write_json

    d = to_json_dict(genotype, space)
    d["genotype"] = to_darts_string(genotype)
    d.update(extra)
    atomic_write_json(path, d)


def load_genotype(spec: str) -> Genotype:
    """A published name, a genotype JSON file, or a DARTS ``Genotype(...)`` string."""
    import os

    if spec.strip().startswith("Genotype("):
        return from_darts_string(spec)
    if os.path.exists(spec):
        with open(spec) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{spec}: not valid JSON ({e})") from e
        if "normal" not in d and "genotype" in d and isinstance(d["genotype"], dict):
            d = d["genotype"]
        return from_json_dict(d)
    if spec.endswith(".json"):
        raise FileNotFoundError(f"genotype file {spec!r} does not exist")
    return get_genotype(spec)
