"""Search spaces as data.

A search space names, for each of the 14 edges of a 4-node DARTS cell, the ordered
candidate ops of the normal cell and of the reduction cell. The order of the ops on an
edge is the discrete action index (the reference implementation; docs/semantics.md), so ``space.normal[e][a]`` is the
op that action ``a`` puts on normal edge ``e``.

Edge ``e`` of a cell feeds node ``EDGE_NODE[e]`` from state ``EDGE_INPUT[e]`` (0 = c_{k-2},
1 = c_{k-1}, 2 + i = intermediate node i): node 0 gets edges 0-1, node 1 edges 2-4,
node 2 edges 5-8 and node 3 edges 9-13.

References:
  Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019.
  Zela et al., "Understanding and Robustifying DARTS", ICLR 2020 (spaces S1-S4).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "NUM_NODES",
    "NUM_EDGES",
    "EDGE_NODE",
    "EDGE_INPUT",
    "SearchSpace",
    "SPACES",
    "get_space",
    "ALL_OPS",
]

NUM_NODES = 4
NUM_EDGES = sum(2 + i for i in range(NUM_NODES))  # 14
EDGE_NODE = tuple(n for n in range(NUM_NODES) for _ in range(2 + n))
EDGE_INPUT = tuple(j for n in range(NUM_NODES) for j in range(2 + n))

#: Every op name the library implements (see ``jaxdarts.ops.OPS``).
ALL_OPS = (
    "none",
    "noise",
    "skip_connect",
    "max_pool_3x3",
    "avg_pool_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_1x1",
    "conv_3x3",
)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Candidate ops per edge for the normal and the reduction cell.

    Attributes:
      name: registry name (``darts``, ``s1`` ... ``s4``, ``nas-bench-201``).
      normal: 14 tuples of op names, one per normal-cell edge; all the same length.
      reduce: 14 tuples of op names, one per reduction-cell edge.
    """

    name: str
    normal: tuple[tuple[str, ...], ...]
    reduce: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        for cell in (self.normal, self.reduce):
            if len(cell) != NUM_EDGES:
                raise ValueError(
                    f"space {self.name!r}: need {NUM_EDGES} edges per cell"
                )
            if len({len(ops) for ops in cell}) != 1:
                raise ValueError(f"space {self.name!r}: every edge needs as many ops")
            for ops in cell:
                unknown = set(ops) - set(ALL_OPS)
                if unknown:
                    raise ValueError(
                        f"space {self.name!r}: unknown ops {sorted(unknown)}; "
                        f"known ops are {list(ALL_OPS)}"
                    )
        if len(self.normal[0]) != len(self.reduce[0]):
            raise ValueError(f"space {self.name!r}: normal and reduce op counts differ")

    @property
    def num_ops(self) -> int:
        """Number of candidate ops per edge (the discrete action count)."""
        return len(self.normal[0])

    @property
    def uniform(self) -> bool:
        """True when every edge of both cells has the same op list."""
        return len(set(self.normal) | set(self.reduce)) == 1

    @property
    def primitives(self) -> tuple[str, ...]:
        """The shared op list of a uniform space (raises for per-edge spaces)."""
        if not self.uniform:
            raise ValueError(f"space {self.name!r} has different ops per edge")
        return self.normal[0]

    def ops(self, reduce: bool) -> tuple[tuple[str, ...], ...]:
        return self.reduce if reduce else self.normal

    def distinct_ops(self, reduce: bool | None = None) -> tuple[str, ...]:
        """Op names used anywhere in one cell kind (or both), in first-seen order."""
        cells = (self.normal, self.reduce) if reduce is None else (self.ops(reduce),)
        seen: dict[str, None] = {}
        for cell in cells:
            for ops in cell:
                for op in ops:
                    seen.setdefault(op, None)
        return tuple(seen)

    def op_index_table(self, reduce: bool) -> np.ndarray:
        """``[14, num_ops]`` int array: index of each candidate in ``distinct_ops()``."""
        names = self.distinct_ops()
        return np.array(
            [[names.index(op) for op in ops] for ops in self.ops(reduce)], np.int32
        )


def _uniform(name: str, ops: tuple[str, ...]) -> SearchSpace:
    cell = (tuple(ops),) * NUM_EDGES
    return SearchSpace(name, cell, cell)


# The reference's DARTS order (not the DARTS paper's, which puts ``none`` first).
_DARTS = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "skip_connect",
    "avg_pool_3x3",
    "max_pool_3x3",
    "none",
)

# RobustDARTS S1 (the reference implementation; docs/semantics.md): one op pair per edge.
_S1_NORMAL = (
    ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"),
    ("max_pool_3x3", "skip_connect"),
    ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "sep_conv_3x3"),
    ("max_pool_3x3", "skip_connect"),
    ("skip_connect", "dil_conv_3x3"),
    ("dil_conv_3x3", "dil_conv_5x5"),
    ("dil_conv_3x3", "dil_conv_5x5"),
)
_S1_REDUCE = (
    ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "dil_conv_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"),
)

SPACES: dict[str, SearchSpace] = {
    "darts": _uniform("darts", _DARTS),
    "s1": SearchSpace("s1", _S1_NORMAL, _S1_REDUCE),
    "s2": _uniform("s2", ("skip_connect", "sep_conv_3x3")),
    "s3": _uniform("s3", ("none", "skip_connect", "sep_conv_3x3")),
    "s4": _uniform("s4", ("noise", "sep_conv_3x3")),
    "nas-bench-201": _uniform(
        "nas-bench-201",
        ("none", "conv_1x1", "conv_3x3", "avg_pool_3x3", "skip_connect"),
    ),
}


def get_space(name: str | SearchSpace) -> SearchSpace:
    """Looks up a search space by name (``darts``, ``s1``-``s4``, ``nas-bench-201``).

    Raises:
      ValueError: for an unknown name; the message lists the valid ones.
    """
    if isinstance(name, SearchSpace):
        return name
    key = str(name).lower().replace("_", "-")
    if key in ("nb201", "nasbench201"):
        key = "nas-bench-201"
    if key not in SPACES:
        raise ValueError(
            f"unknown search space {name!r}; choose one of {sorted(SPACES)}"
        )
    return SPACES[key]
