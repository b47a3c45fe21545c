"""Pictures of genotypes: both cells side by side, drawn with matplotlib only.

The drawing follows the figures of the DARTS paper: the cell inputs ``c_{k-2}`` and
``c_{k-1}`` on the left, the intermediate nodes ``0 .. n-1`` in the middle, the cell
output ``c_{k}`` on the right, one arrow per ``(op, input)`` pair labelled with the op
and one unlabelled arrow from every concatenated state to ``c_{k}``.

The layout is a small layered (Sugiyama-style) one, no Graphviz: every node sits one
layer right of its deepest input; barycentre sweeps order each layer and a least-squares
pass straightens the arrows; an arrow that skips layers goes straight when that clears
every node, else it is routed through its own slots in the layers it crosses (a
monotone cubic, which cannot overshoot into a node); two pairs from the same input are
bent apart. Op labels are written along their arrows, coloured like them, at the points
that minimise overlaps with nodes, other labels and other arrows. matplotlib is imported
inside the functions (it is slow to import) and only its Agg canvas is used (never
pyplot), so no display or system binary is needed. SVG text stays text, so the op names
can be searched.

References:
  Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019 (visualize.py).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxdarts.genotypes import Genotype, validate_genotype
from jaxdarts.io import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_genotype",
    "plot_genotypes_grid",
    "plot_curves",
    "plot_search_curves",
    "SEARCH_PANELS",
    "OP_COLOURS",
]

#: Colour of each op's arrows and labels (unknown ops are drawn in black).
OP_COLOURS: dict[str, str] = {
    "sep_conv_3x3": "#1f62b4",
    "sep_conv_5x5": "#0b8793",
    "dil_conv_3x3": "#7b3fb0",
    "dil_conv_5x5": "#c2188b",
    "skip_connect": "#2a8a2a",
    "avg_pool_3x3": "#c45f00",
    "max_pool_3x3": "#c62828",
    "conv_1x1": "#6d4c41",
    "conv_3x3": "#7a7a00",
    "noise": "#555555",
    "none": "#999999",
}

# Node fill colours of the DARTS figures (Graphviz darkseagreen2, lightblue,
# palegoldenrod).
_INPUT_FILL = "#b4eeb4"
_NODE_FILL = "#add8e6"
_OUTPUT_FILL = "#eee8aa"
_CONCAT_COLOUR = "#666666"

# Geometry, in inches.
_LAYER_GAP = 2.3  # horizontal distance between layers
_SLOT = 0.88  # vertical distance between two nodes of a layer
_DUMMY_SLOT = 0.42  # vertical room of an arrow crossing a layer
_NODE_W = 0.56
_NODE_H = 0.34
_MARGIN_X = 0.42  # room left of the inputs and right of the output
_MARGIN_Y = 0.28  # room above the top node and below the bottom one
_SUBTITLE_H = 0.3
_TITLE_H = 0.45
_ROW_TITLE_H = 0.3
_COLUMN_GAP = 0.45
_DPI = 150
_LABEL_FONTSIZE = 7.5
_NODE_FONTSIZE = 10.5


@dataclasses.dataclass
class _Edge:
    """One arrow: ``src -> dst`` state ids, its op (``None`` for concat arrows)."""

    src: int
    dst: int
    op: str | None
    points: list[tuple[float, float]]  # route in (layer, slot) units, ends included


@dataclasses.dataclass
class _CellLayout:
    """Positions of one cell in (layer, slot) units; ``y`` grows downwards."""

    n_states: int  # 2 inputs + intermediate nodes; the output is state ``n_states``
    pos: dict[int, tuple[float, float]]
    edges: list[_Edge]
    n_layers: int
    y_min: float
    y_max: float

    @property
    def width_in(self) -> float:
        return (self.n_layers - 1) * _LAYER_GAP + 2 * _MARGIN_X

    @property
    def height_in(self) -> float:
        return (self.y_max - self.y_min) * _SLOT + _NODE_H + 2 * _MARGIN_Y


def _layout_cell(
    pairs: Sequence[tuple[str, int]], concat: Sequence[int]
) -> _CellLayout:
    """Layered left-to-right layout of one cell (layers by longest path)."""
    n_nodes = len(pairs) // 2
    n_states = 2 + n_nodes
    out = n_states
    layer = {0: 0, 1: 0}
    for i in range(n_nodes):
        layer[2 + i] = 1 + max(layer[int(idx)] for _, idx in pairs[2 * i : 2 * i + 2])
    layer[out] = 1 + max(layer[int(c)] for c in concat)
    n_layers = layer[out] + 1

    edge_ends = [(int(idx), 2 + k // 2, str(op)) for k, (op, idx) in enumerate(pairs)]
    edge_ends += [(int(c), out, None) for c in dict.fromkeys(int(c) for c in concat)]

    n_same = [sum(t[:2] == e[:2] for t in edge_ends) for e in edge_ends]
    # A long arrow goes straight when that clears every node it passes by; else it
    # gets a slot in every layer it crosses. Which arrows go straight depends on the
    # positions and the positions on the slots, so iterate (an arrow found blocked
    # once keeps its slots).
    long = [e for e, (s, d, _) in enumerate(edge_ends) if layer[d] - layer[s] > 1]
    straight: set[int] = set()
    blocked: set[int] = set()
    for _ in range(6):
        y, chains = _place_layers(edge_ends, layer, n_layers, straight)
        pos = {it[1]: (float(layer[it[1]]), y[it]) for it in y if it[0] == "n"}

        def clears(e, pos=pos):
            return _clears_nodes(pos[edge_ends[e][0]], pos[edge_ends[e][1]], pos)

        bad = {e for e in straight if not clears(e)}
        if bad:
            blocked |= bad
            straight -= bad
            continue
        more = {
            e
            for e in long
            if e not in straight | blocked and n_same[e] == 1 and clears(e)
        }
        if not more:
            break
        straight |= more
    else:  # not settled: every long arrow keeps its slots
        straight = set()
        y, chains = _place_layers(edge_ends, layer, n_layers, straight)
        pos = {it[1]: (float(layer[it[1]]), y[it]) for it in y if it[0] == "n"}

    edges = []
    seen: dict[tuple[int, int], int] = {}
    for e, ((s, d, op), chain) in enumerate(zip(edge_ends, chains, strict=True)):
        points = [pos[s], *[(float(it[2]), y[it]) for it in chain[1:-1]], pos[d]]
        if e in straight:
            points = [pos[s], pos[d]]
        elif len(points) == 2 and n_same[e] > 1:
            # Two pairs from the same input to the same node: bend them apart.
            dup = seen.get((s, d), 0)
            seen[(s, d)] = dup + 1
            bend = 0.28 if dup == 0 else -0.28
            (x0, y0), (x1, y1) = points
            points.insert(1, ((x0 + x1) / 2, (y0 + y1) / 2 + bend))
        edges.append(_Edge(s, d, op, points))
    ys = list(y.values())
    return _CellLayout(n_states, pos, edges, n_layers, min(ys), max(ys))


def _clears_nodes(a: tuple[float, float], b: tuple[float, float], pos: dict) -> bool:
    """Whether the segment ``a -> b`` passes every node between them by 0.45 slot."""
    (x0, y0), (x1, y1) = a, b
    half_w = _NODE_W / 2 / _LAYER_GAP
    return all(
        abs(y0 + (x - x0) * (y1 - y0) / (x1 - x0) - ny) > 0.45
        for nx, ny in pos.values()
        if x0 < nx < x1
        for x in (nx - half_w, nx, nx + half_w)
    )


def _place_layers(edge_ends, layer, n_layers, straight):
    """Orders the nodes and arrow slots of every layer and gives them heights.

    Returns ``y`` (keyed ``("n", state)`` for nodes and ``("d", edge, layer)`` for the
    slot of an arrow crossing a layer) and each arrow's chain of keys.
    """
    members: list[list[tuple]] = [[] for _ in range(n_layers)]
    for v in sorted(layer):
        members[layer[v]].append(("n", v))
    chains = []
    for e, (s, d, _) in enumerate(edge_ends):
        chain = [("n", s)]
        for lay in range(layer[s] + 1, layer[d]):
            if e not in straight:
                item = ("d", e, lay)
                members[lay].append(item)
                chain.append(item)
        chains.append([*chain, ("n", d)])
    preds: dict[tuple, list[tuple]] = {}
    succs: dict[tuple, list[tuple]] = {}
    for chain in chains:
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            succs.setdefault(a, []).append(b)
            preds.setdefault(b, []).append(a)

    def sizes(order: list[tuple]) -> np.ndarray:
        return np.array([1.0 if it[0] == "n" else _DUMMY_SLOT / _SLOT for it in order])

    def place(order: list[tuple]) -> dict[tuple, float]:
        size = sizes(order)
        centres = np.cumsum(size) - size / 2
        centres -= centres[-1] / 2 + centres[0] / 2
        return dict(zip(order, centres.tolist(), strict=True))

    y: dict[tuple, float] = {}
    for lay in range(n_layers):
        y.update(place(members[lay]))
    # Spread the two inputs along a tall cell: their fans of arrows get more room.
    span = max(y.values()) - min(y.values())
    y[("n", 0)], y[("n", 1)] = -max(0.5, span / 3), max(0.5, span / 3)
    # Barycentre sweeps (down, up, down) order each layer to reduce crossings.
    sweeps = [range(1, n_layers), range(n_layers - 2, 0, -1), range(1, n_layers)]
    for k, sweep in enumerate(sweeps):
        first, second = (succs, preds) if k == 1 else (preds, succs)
        for lay in sweep:
            rank = {it: i for i, it in enumerate(members[lay])}

            def bary(it, nbrs):
                ys = [y[n] for n in nbrs.get(it, [])]
                return float(np.mean(ys)) if ys else y[it]

            def key(it, first=first, second=second, rank=rank):
                return (bary(it, first), bary(it, second), rank[it])

            members[lay].sort(key=key)
            y.update(place(members[lay]))
    # Then, keeping that order and the spacing, pull every node and arrow slot
    # towards its neighbours (least squares per layer), which straightens arrows.
    for _ in range(12):
        for lay in range(1, n_layers):
            order = members[lay]
            want = np.array(
                [
                    np.mean([y[n] for n in preds.get(it, []) + succs.get(it, [])])
                    for it in order
                ]
            )
            y.update(zip(order, _spaced_fit(want, sizes(order)).tolist(), strict=True))
    return y, chains


def _spaced_fit(want: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Positions closest to ``want`` (least squares) that keep their order and
    neighbours ``(size[i] + size[i + 1]) / 2`` apart (pool adjacent violators)."""
    gap = np.r_[0.0, np.cumsum((size[:-1] + size[1:]) / 2)]
    blocks: list[list[float]] = []  # [mean, count]
    for z in want - gap:
        blocks.append([z, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, n1), (m2, n2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2]
    return np.concatenate([np.full(int(n), m) for m, n in blocks]) + gap


def _spline(points: Sequence[tuple[float, float]], n: int = 48) -> np.ndarray:
    """Dense samples of the monotone cubic (PCHIP) ``y(x)`` through ``points``.

    Routes run strictly left to right, so ``y`` is a function of ``x``; the monotone
    cubic never overshoots its points, so a route stays in its slots between nodes.
    """
    p = np.asarray(points, dtype=float)
    x, y = p[:, 0], p[:, 1]
    h = np.diff(x)
    delta = np.diff(y) / h
    m = np.zeros_like(y)  # Fritsch-Carlson slopes
    if len(p) == 2:
        m[:] = delta[0]
    else:
        w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
        same = delta[:-1] * delta[1:] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            harm = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
        m[1:-1] = np.where(same, harm, 0.0)
        m[0], m[-1] = delta[0], delta[-1]  # straight at the ends: clean arrows
    out = []
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    for i in range(len(p) - 1):
        h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
        h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
        xs = x[i] + t * h[i]
        ys = h00 * y[i] + h10 * h[i] * m[i] + h01 * y[i + 1] + h11 * h[i] * m[i + 1]
        out.append(np.stack([xs, ys], 1))
    out.append(p[-1:])
    return np.vstack(out)


def _clip_to_boxes(
    curve: np.ndarray, start: tuple[float, float], end: tuple[float, float], half
) -> np.ndarray:
    """Cuts the parts of ``curve`` inside the source and target node boxes."""
    hx, hy = half

    def inside(pts, c):
        return (np.abs(pts[:, 0] - c[0]) <= hx) & (np.abs(pts[:, 1] - c[1]) <= hy)

    def boundary(a, b, c):  # a inside, b outside the box centred at c: bisect
        for _ in range(30):
            m = (a + b) / 2
            if inside(m[None], c)[0]:
                a = m
            else:
                b = m
        return b

    keep = ~(inside(curve, start) | inside(curve, end))
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return curve[[0, -1]]
    first, last = idx[0], idx[-1]
    head = [boundary(curve[first - 1], curve[first], start)] if first > 0 else []
    tail = (
        [boundary(curve[last + 1], curve[last], end)] if last < len(curve) - 1 else []
    )
    return np.vstack([*head, curve[first : last + 1], *tail])


def _node_label(state: int, n_states: int) -> str:
    if state == 0:
        return r"$c_{k-2}$"
    if state == 1:
        return r"$c_{k-1}$"
    if state == n_states:
        return r"$c_{k}$"
    return str(state - 2)


def _draw_cell(ax: Axes, cell: _CellLayout, renderer: Any) -> None:
    """Draws one cell into ``ax``, whose position and size are already final."""
    # Data units: x in layers, y in slots (downwards); the axes box is sized so that
    # one unit is _LAYER_GAP / _SLOT inches.
    mx, my = _MARGIN_X / _LAYER_GAP, (_MARGIN_Y + _NODE_H / 2) / _SLOT
    ax.set_xlim(-mx, cell.n_layers - 1 + mx)
    ax.set_ylim(cell.y_max + my, cell.y_min - my)
    ax.set_autoscale_on(False)
    ax.axis("off")
    half = (_NODE_W / 2 / _LAYER_GAP, _NODE_H / 2 / _SLOT)
    node_boxes = _draw_nodes(ax, cell, half)
    routes = [_draw_edge(ax, cell, edge, half) for edge in cell.edges]
    _place_labels(ax, cell, routes, node_boxes, renderer)


def _draw_nodes(
    ax: Axes, cell: _CellLayout, half: tuple[float, float]
) -> list[np.ndarray]:
    """Draws the node boxes and their names.

    Args:
      ax: the cell's axes (limits final).
      cell: the laid-out cell.
      half: the half width and half height of a node box, in data units.

    Returns:
      One ``[2, 2]`` array per node: its lower-left and upper-right corners in
      display units.
    """
    from matplotlib.patches import FancyBboxPatch

    node_boxes = []
    for state, (x, y) in cell.pos.items():
        fill = _INPUT_FILL if state < 2 else _NODE_FILL
        fill = _OUTPUT_FILL if state == cell.n_states else fill
        box = FancyBboxPatch(
            (x - half[0], y - half[1]),
            2 * half[0],
            2 * half[1],
            boxstyle=f"round,pad=0,rounding_size={0.07 / _LAYER_GAP}",
            mutation_aspect=_LAYER_GAP / _SLOT,
            facecolor=fill,
            edgecolor="#333333",
            linewidth=0.9,
            zorder=3,
        )
        ax.add_patch(box)
        ax.text(
            x,
            y,
            _node_label(state, cell.n_states),
            ha="center",
            va="center",
            fontsize=_NODE_FONTSIZE,
            zorder=4,
        )
        node_boxes.append(
            ax.transData.transform(
                [(x - half[0], y - half[1]), (x + half[0], y + half[1])]
            )
        )
    return node_boxes


def _draw_edge(
    ax: Axes, cell: _CellLayout, edge: _Edge, half: tuple[float, float]
) -> np.ndarray:
    """Draws one arrow (its curve and its head) of ``cell``.

    Args:
      ax: the cell's axes (limits final).
      cell: the laid-out cell.
      edge: one of ``cell.edges``.
      half: the half width and half height of a node box, in data units.

    Returns:
      ``[n, 2]`` points every 2 display units along the drawn curve.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    curve = _clip_to_boxes(
        _spline(edge.points), cell.pos[edge.src], cell.pos[edge.dst], half
    )
    colour = OP_COLOURS.get(edge.op, "black") if edge.op else _CONCAT_COLOUR
    ax.add_line(
        Line2D(
            curve[:, 0],
            curve[:, 1],
            color=colour,
            linewidth=1.3 if edge.op else 1.0,
            solid_capstyle="butt",
            zorder=1,
        )
    )
    disp = ax.transData.transform(curve)
    # The arrow head: a short arrow along the last few points of the route.
    seg = np.cumsum(np.r_[0, np.linalg.norm(np.diff(disp[::-1], axis=0), axis=1)])
    back = disp[::-1][min(np.searchsorted(seg, 8.0), len(disp) - 1)]
    tail = ax.transData.inverted().transform(back)
    ax.add_patch(
        FancyArrowPatch(
            tuple(tail),
            tuple(curve[-1]),
            arrowstyle="-|>",
            mutation_scale=10,
            shrinkA=0,
            shrinkB=0,
            color=colour,
            linewidth=1.0,
            zorder=2,
        )
    )
    return _resample(disp, 2.0)


def _resample(disp: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` display units along a polyline."""
    seg = np.linalg.norm(np.diff(disp, axis=0), axis=1)
    s = np.r_[0, np.cumsum(seg)]
    if s[-1] == 0:
        return disp[:1]
    t = np.linspace(0, s[-1], max(2, int(s[-1] / step) + 1))
    return np.stack([np.interp(t, s, disp[:, 0]), np.interp(t, s, disp[:, 1])], 1)


def _obox_overlaps(a: tuple, b: tuple) -> np.ndarray:
    """``[n, m]`` bools: which of ``n`` oriented boxes overlap which of ``m`` others.

    A box set is ``(centres [k, 2], unit axes [k, 2], half lengths [k],
    half heights [k])``; the test is the separating axis theorem.
    """
    ca, ua, wa, ha = (np.asarray(x, float)[:, None] for x in a)
    cb, ub, wb, hb = (np.asarray(x, float)[None, :] for x in b)
    va = np.stack([-ua[..., 1], ua[..., 0]], -1)
    vb = np.stack([-ub[..., 1], ub[..., 0]], -1)
    d = cb - ca
    apart = np.zeros(d.shape[:2], bool)
    for axis in (ua, va, ub, vb):

        def proj(x, axis=axis):
            return np.abs((x * axis).sum(-1))

        ra = wa * proj(ua) + ha * proj(va)
        rb = wb * proj(ub) + hb * proj(vb)
        apart |= proj(d) >= ra + rb
    return ~apart


#: Where a label may sit along its arrow (fractions of the arrow's length).
_LABEL_FRACTIONS = np.linspace(0.08, 0.92, 43)
#: The cost of a label that overlaps another label, a node or the axes border.
_PROHIBITIVE = 1000.0


def _place_labels(ax: Axes, cell: _CellLayout, routes, node_boxes, renderer) -> None:
    """Puts each op label on its arrow, rotated along it, where it covers the least.

    Candidates are points along each arrow. The cost of a choice counts overlaps with
    other labels, nodes and the axes border (prohibitive), other arrows under the
    label (high) and the distance from the middle of the arrow (small); it is
    minimised by coordinate descent from several greedy starts.
    """
    labelled = [i for i, e in enumerate(cell.edges) if e.op]
    if not labelled:
        return
    texts = {i: _label_text(ax, cell.edges[i].op) for i in labelled}
    cands = {i: _label_candidates(ax, texts[i], routes[i], renderer) for i in labelled}
    axbox = ax.get_window_extent(renderer)
    nodes = _node_oboxes(node_boxes)
    static = {
        i: _static_label_cost(i, cands[i], axbox, nodes, routes) for i in labelled
    }
    clash = {
        (i, j): _PROHIBITIVE * _obox_overlaps(cands[i], cands[j])
        for i in labelled
        for j in labelled
        if i != j
    }
    best = _choose_labels(labelled, static, clash)
    inv = ax.transData.inverted()
    for i in labelled:
        centre, u = cands[i][0][best[i]], cands[i][1][best[i]]
        texts[i].set_position(tuple(inv.transform(centre)))
        texts[i].set_rotation(float(np.degrees(np.arctan2(u[1], u[0]))))


def _label_text(ax: Axes, op: str) -> Any:
    """The (not yet placed) boxed text of an op label, in the op's colour."""
    colour = OP_COLOURS.get(op, "black")
    return ax.text(
        0,
        0,
        op,
        ha="center",
        va="center",
        rotation_mode="anchor",
        fontsize=_LABEL_FONTSIZE,
        color=colour,
        zorder=5,
        bbox=dict(
            boxstyle="round,pad=0.22", facecolor="white", edgecolor=colour, lw=0.6
        ),
    )


def _label_candidates(ax: Axes, text: Any, pts: np.ndarray, renderer) -> tuple:
    """The places a label may take along its arrow, as oriented boxes.

    Args:
      ax: the cell's axes.
      text: the label's text artist (its size is measured).
      pts: ``[n, 2]`` display points along the arrow.
      renderer: the canvas renderer.

    Returns:
      ``(centres [k, 2], unit axes [k, 2], half lengths [k], half heights [k])``
      for the ``k = len(_LABEL_FRACTIONS)`` candidates, in display units; the unit
      axes point left to right.
    """
    pad = 0.22 * _LABEL_FONTSIZE / 72 * ax.figure.dpi + 2.0  # bbox pad + margin, px
    ext = text.get_window_extent(renderer)
    k = np.rint(_LABEL_FRACTIONS * (len(pts) - 1)).astype(int)
    d = pts[np.minimum(k + 4, len(pts) - 1)] - pts[np.maximum(k - 4, 0)]
    u = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    u[u[:, 0] < 0] *= -1  # read left to right
    n = len(k)
    return (
        pts[k],
        u,
        np.full(n, ext.width / 2 + pad),
        np.full(n, ext.height / 2 + pad),
    )


def _node_oboxes(node_boxes: Sequence[np.ndarray]) -> tuple:
    """The node boxes (corners in display units), grown by 2 px, as oriented boxes."""
    return tuple(
        np.array(x)
        for x in zip(
            *[
                (
                    (nb[0] + nb[1]) / 2,
                    (1.0, 0.0),
                    *(np.abs(nb[1] - nb[0]) / 2 + 2.0),
                )
                for nb in node_boxes
            ],
            strict=True,
        )
    )


def _static_label_cost(
    i: int, cand: tuple, axbox: Any, nodes: tuple, routes: Sequence[np.ndarray]
) -> np.ndarray:
    """``[k]`` costs of the candidates of label ``i`` that ignore the other labels.

    Args:
      i: the index of the labelled edge.
      cand: its candidates (see :func:`_label_candidates`).
      axbox: the axes' display extent (a label crossing it is prohibitive).
      nodes: the node boxes (see :func:`_node_oboxes`; overlap is prohibitive).
      routes: display points along every arrow; covering another arrow costs 30
        plus 0.01 per covered point.

    Returns:
      The cost of each candidate, plus its distance from the arrow's middle.
    """
    c, u, w, h = cand
    v = np.stack([-u[:, 1], u[:, 0]], -1)
    cost = np.abs(_LABEL_FRACTIONS - 0.5)
    for sx in (-1, 1):
        for sy in (-1, 1):
            corner = c + sx * w[:, None] * u + sy * h[:, None] * v
            out = (
                (corner[:, 0] < axbox.x0)
                | (corner[:, 0] > axbox.x1)
                | (corner[:, 1] < axbox.y0)
                | (corner[:, 1] > axbox.y1)
            )
            cost = cost + _PROHIBITIVE * out
    cost = cost + _PROHIBITIVE * _obox_overlaps(cand, nodes).sum(1)
    for j, pts in enumerate(routes):
        if j != i:
            rel = pts[None] - c[:, None]
            along = np.abs((rel * u[:, None]).sum(-1)) < w[:, None]
            across = np.abs((rel * v[:, None]).sum(-1)) < h[:, None]
            covered = (along & across).sum(1)
            cost = cost + (covered > 0) * 30 + 0.01 * covered
    return cost


def _choose_labels(
    labelled: Sequence[int],
    static: Mapping[int, np.ndarray],
    clash: Mapping[tuple[int, int], np.ndarray],
) -> dict[int, int]:
    """The candidate of each label that minimises the total cost.

    Coordinate descent from a greedy start in the edges' order and from 7 greedy
    starts in seeded random orders; the cheapest result wins.

    Args:
      labelled: the indices of the labelled edges.
      static: ``[k]`` costs per label (see :func:`_static_label_cost`).
      clash: ``[k, k]`` costs per ordered pair of labels: their overlaps.

    Returns:
      The chosen candidate index per label.
    """

    def local(i, choice) -> np.ndarray:
        c = static[i].copy()
        for j, cj in choice.items():
            if j != i:
                c += clash[i, j][:, cj]
        return c

    rng = np.random.default_rng(0)
    best, best_cost = None, np.inf
    for restart in range(8):
        order = list(labelled) if restart == 0 else list(rng.permutation(labelled))
        choice: dict[int, int] = {}
        for i in order:  # greedy start
            choice[i] = int(np.argmin(local(i, choice)))
        for _ in range(10):  # coordinate descent
            changed = False
            for i in order:
                c = int(np.argmin(local(i, choice)))
                if local(i, choice)[c] < local(i, choice)[choice[i]]:
                    choice[i], changed = c, True
            if not changed:
                break
        total = sum(static[i][choice[i]] for i in labelled) + sum(
            clash[i, j][choice[i], choice[j]] for i, j in clash if i < j
        )
        if total < best_cost:
            best, best_cost = dict(choice), total
    return best


def _compose(rows: Sequence[tuple[str | None, Genotype]], title: str | None) -> Figure:
    """A figure with one row per genotype: normal cell left, reduction cell right."""
    # The Agg canvas directly: pyplot (and its backend selection) is never used.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cells = [
        (
            name,
            _layout_cell(genotype.normal, genotype.normal_concat),
            _layout_cell(genotype.reduce, genotype.reduce_concat),
        )
        for name, genotype in rows
    ]
    w_normal = max(c[1].width_in for c in cells)
    w_reduce = max(c[2].width_in for c in cells)
    width = w_normal + _COLUMN_GAP + w_reduce + 0.2
    row_heights = [
        max(n.height_in, r.height_in) + _SUBTITLE_H + (_ROW_TITLE_H if name else 0)
        for name, n, r in cells
    ]
    top = _TITLE_H if title else 0.05
    height = top + sum(row_heights) + 0.05

    fig = Figure(figsize=(width, height), dpi=_DPI)
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    if title:
        fig.text(
            0.5,
            1 - 0.22 / height,
            title,
            ha="center",
            va="center",
            fontsize=13,
            fontweight="bold",
        )
    y_top = height - top
    axes = []
    for (name, normal, reduce), row_h in zip(cells, row_heights, strict=True):
        columns = (
            (0.1, w_normal, normal, "normal cell"),
            (0.1 + w_normal + _COLUMN_GAP, w_reduce, reduce, "reduction cell"),
        )
        axes += _add_row(fig, (width, height), name, columns, y_top, row_h)
        y_top -= row_h
    for ax, cell in axes:
        _draw_cell(ax, cell, renderer)
    return fig


def _add_row(
    fig: Figure,
    size: tuple[float, float],
    name: str | None,
    columns: Sequence[tuple[float, float, _CellLayout, str]],
    y_top: float,
    row_h: float,
) -> list[tuple[Axes, _CellLayout]]:
    """Adds one genotype's row: its name, and an empty axes and subtitle per cell.

    Args:
      fig: the figure.
      size: the figure's width and height, in inches.
      name: the row's title, or ``None`` for none.
      columns: ``(left, column width, cell, subtitle)`` per cell, in inches.
      y_top: the top of the row, in inches from the figure's bottom.
      row_h: the row's height, in inches.

    Returns:
      ``(axes, cell)`` per column, the axes still to be drawn into.
    """
    width, height = size
    if name:
        fig.text(
            0.1 / width,
            (y_top - _ROW_TITLE_H / 2) / height,
            name,
            ha="left",
            va="center",
            fontsize=12,
            fontweight="bold",
        )
    body = row_h - _SUBTITLE_H - (_ROW_TITLE_H if name else 0)
    body_top = y_top - (_ROW_TITLE_H if name else 0) - _SUBTITLE_H
    axes = []
    for x0, col_w, cell, sub in columns:
        left = x0 + (col_w - cell.width_in) / 2
        bottom = body_top - body / 2 - cell.height_in / 2
        ax = fig.add_axes(
            (
                left / width,
                bottom / height,
                cell.width_in / width,
                cell.height_in / height,
            )
        )
        axes.append((ax, cell))
        # The subplot title sits at the top of the row, also above a short cell.
        fig.text(
            (x0 + col_w / 2) / width,
            (body_top + _SUBTITLE_H / 2) / height,
            sub,
            ha="center",
            va="center",
            fontsize=11,
        )
    return axes


def _save(fig: Figure, path_stem: str | Path) -> tuple[Path, Path]:
    import matplotlib

    stem = Path(path_stem)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    png, svg = stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.svg"
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "jaxdarts"}):
        for path, fmt, meta in (
            (png, "png", {"Software": None}),
            (svg, "svg", {"Date": None, "Creator": None}),
        ):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=_DPI, metadata=meta, facecolor="white")
            atomic_write_bytes(path, buf.getvalue())
    return png, svg


def plot_genotype(
    genotype: Genotype, path_stem: str | Path, title: str | None = None
) -> tuple[Path, Path]:
    """Draws both cells of a genotype side by side and writes a PNG and an SVG.

    Args:
      genotype: the genotype to draw (validated first).
      path_stem: output path without extension; ``<stem>.png`` and ``<stem>.svg`` are
        written atomically (folders are created). A ``.png``/``.svg`` suffix is
        dropped.
      title: optional title above both cells.

    Returns:
      The paths of the PNG and of the SVG.

    Raises:
      ValueError: if the genotype is not valid (see ``validate_genotype``).
    """
    validate_genotype(genotype)
    fig = _compose([(None, genotype)], title)
    return _save(fig, path_stem)


def plot_genotypes_grid(
    named: Mapping[str, Genotype], path_stem: str | Path, title: str | None = None
) -> tuple[Path, Path]:
    """Draws several genotypes, one row each (normal cell left, reduction right).

    Args:
      named: genotypes by the name shown above their row, e.g. ``PUBLISHED``.
      path_stem: output path without extension (see :func:`plot_genotype`).
      title: optional title above all rows.

    Returns:
      The paths of the PNG and of the SVG.

    Raises:
      ValueError: if ``named`` is empty or a genotype is not valid.
    """
    if not named:
        raise ValueError("plot_genotypes_grid needs at least one genotype")
    for genotype in named.values():
        validate_genotype(genotype)
    fig = _compose(list(named.items()), title)
    return _save(fig, path_stem)


# ------------------------------------------------------------------ learning curves

#: The panels of a search's ``curves.png``: title -> (metric, line style) pairs.
SEARCH_PANELS: dict[str, tuple[tuple[str, str], ...]] = {
    "episode reward (raw)": (("reward_mean", "-"), ("reward_max", ":")),
    "policy entropy": (("entropy", "-"),),
}


def _series(metrics: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    """``[T, S]`` values of ``name`` (a list per record = one value per seed); NaN
    where a record lacks it."""
    rows = []
    for m in metrics:
        v = m.get(name)
        if v is None:
            v = np.nan
        rows.append(np.atleast_1d(np.asarray(v, np.float64)))
    width = max((len(r) for r in rows), default=1)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def plot_curves(
    metrics: Sequence[Mapping[str, Any]],
    path: str | Path,
    x: str,
    panels: Mapping[str, Sequence[tuple[str, str]]],
    xlabel: str | None = None,
) -> Path:
    """Writes one panel per entry of ``panels`` against ``x`` as a PNG.

    A metric whose records hold a list (one value per seed, as ``search --seeds N``
    writes) is drawn once per seed, in the seed's colour.

    Args:
      metrics: the records of ``metrics.jsonl``.
      path: the PNG (written atomically).
      x: the record key of the horizontal axis (``timesteps``, ``epoch``...).
      panels: panel title -> ``(metric, matplotlib line style)`` pairs.
      xlabel: the axis label (default ``x``).

    Returns:
      The path written.
    """
    from matplotlib.figure import Figure

    xs = np.array([m.get(x, np.nan) for m in metrics], np.float64)
    fig = Figure(figsize=(5 * len(panels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, lines) in zip(axes, panels.items(), strict=True):
        for name, style in lines:
            ys = _series(metrics, name)
            for s in range(ys.shape[1]):
                label = name if ys.shape[1] == 1 else f"{name} seed {s}"
                ax.plot(xs, ys[:, s], style, color=f"C{s}", label=label, marker=".")
        ax.set(xlabel=xlabel or x, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_search_curves(metrics: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """A search's ``curves.png``: raw episode reward (mean solid, max dotted) and
    policy entropy against timesteps, for every seed."""
    return plot_curves(metrics, path, "timesteps", SEARCH_PANELS, "env steps")
