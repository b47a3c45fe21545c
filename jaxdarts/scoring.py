"""Scoring genotypes with a supernet reward (NWOT, accuracy or negative loss).

A genotype is scored as the 14-edge supernet whose genotype edges carry their op and
whose other edges carry ``none``: the supernet the reference's reward sees, restricted
to the genotype's edges. A JSON file may instead hold a *full assignment*,
``{"normal_ops": [14 op names], "reduce_ops": [14 op names], "space": ...}`` (one op per
edge of both cells, ``null`` for ``none``: what a discrete search episode ends with),
which is scored as it is.

For each of ``seeds`` seeds ``i = 0 .. N-1``: seed ``i`` initialises the supernet
(PyTorch's default initialisation from ``jax.random.key(i)``; a pre-trained supernet is
used as it is) and picks the batch: ``batch_size`` images drawn without replacement
(``numpy.random.default_rng(i)``) from the validation half of the train set, i.e. the
second half of :func:`jaxdarts.data.split_indices` with seed ``i`` (with a checkpoint:
with the checkpoint's ``split_seed``, so the weights never saw the batch). Images are
normalised with the dataset's mean and std (the checkpoint's, if given) and not
augmented. All genotypes of one seed are scored in one jitted, batched call
(:func:`jaxdarts.rewards.score_architectures`); the result per genotype is the mean and
the (population, ``ddof=0``) standard deviation of its scores over the seeds.

NWOT flavours: ``reference`` (default) uses eval-mode BatchNorm (running statistics)
and a batch of 64, as the reference implementation; ``original`` (Mellor et al.) uses
train-mode BatchNorm (batch statistics) and one fixed batch: the first 128 images of
the validation half, un-augmented (:func:`jaxdarts.env.nwot_original_batch`, the batch
a search with that flavour scores on; with a checkpoint the same for every seed). Both
build the kernel from exact integer counts and take the log-determinant in float64.

``reward.bn_mode``: ``eval`` (default, the reference) scores with BatchNorm's running
statistics, ``batch`` with the statistics of the scored batch (any reward kind; a
supernet pre-trained as a mixture mostly needs it for one-op-per-edge architectures
to score above chance).

Every score goes through :func:`jaxdarts.rewards.guard_reward`: a ``loss`` reward is
clipped at -100, and a singular kernel or a non-finite score gets the reward kind's
invalid value, below every valid one (``nwot``: -1, ``acc``: -1, ``loss``: -101;
:data:`jaxdarts.rewards.INVALID_REWARD`); it is flagged in the record's ``valid`` list
and the record's ``invalid_reward`` says the value.

References:
  Mellor, Turner, Storkey, Crowley. "Neural Architecture Search without Training",
  ICML 2021.
  Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search", ICLR 2019.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxdarts import build
from jaxdarts.genotypes import Genotype, genotype_edge_ops, load_genotype
from jaxdarts.rewards import RewardConfig
from jaxdarts.spaces import NUM_EDGES, SearchSpace, get_space

__all__ = [
    "Architecture",
    "resolve_architecture",
    "check_ops",
    "make_scorer",
    "ScoreSetup",
    "prepare",
    "score_genotypes",
    "format_table",
]

_log = logging.getLogger("jaxdarts.score")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One op name per edge of both cells (``none`` on absent edges).

    Attributes:
      label: the name or path it was given as.
      normal_ops: 14 op names of the normal cell.
      reduce_ops: 14 op names of the reduction cell.
      space: the space a full-assignment file names, if any.
    """

    label: str
    normal_ops: tuple[str, ...]
    reduce_ops: tuple[str, ...]
    space: str | None = None


def _from_ops(label: str, d: dict[str, Any]) -> Architecture:
    cells = []
    for key in ("normal_ops", "reduce_ops"):
        ops = d.get(key)
        if not isinstance(ops, (list, tuple)) or len(ops) != NUM_EDGES:
            raise ValueError(
                f"{label}: {key!r} must be a list of {NUM_EDGES} op names (one per "
                f"edge, null for none), got {ops!r}"
            )
        if not all(o is None or isinstance(o, str) for o in ops):
            raise ValueError(f"{label}: {key!r} must hold op names (strings or null)")
        cells.append(tuple("none" if o is None else o for o in ops))
    space = d.get("space")
    if space is not None:
        space = get_space(space).name
    return Architecture(label, cells[0], cells[1], space)


def _from_genotype(label: str, g: Genotype, space: str | None) -> Architecture:
    normal, reduce = genotype_edge_ops(g)
    return Architecture(
        label,
        tuple("none" if o is None else o for o in normal),
        tuple("none" if o is None else o for o in reduce),
        space,
    )


def resolve_architecture(spec: str | Genotype | Architecture) -> Architecture:
    """Turns a genotype spec into per-edge ops (no space check; see ``check_ops``).

    Args:
      spec: a published genotype name (``disc-nwot``), a genotype JSON file, a JSON
        file with a full assignment (``normal_ops``/``reduce_ops``), a DARTS
        ``Genotype(...)`` string, a :class:`~jaxdarts.genotypes.Genotype` or an
        :class:`Architecture`.

    Raises:
      FileNotFoundError: a ``.json`` path that does not exist.
      ValueError: an unknown name or a malformed file.
    """
    if isinstance(spec, Architecture):
        return spec
    if isinstance(spec, Genotype):
        return _from_genotype(_short(str(spec)), spec, None)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a genotype must be a non-empty string, got {spec!r}")
    if os.path.isfile(spec):
        try:
            with open(spec) as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{spec}: not a valid JSON file ({e})") from e
        if not isinstance(d, dict):
            raise ValueError(f"{spec}: expected a JSON object, got {type(d).__name__}")
        if "normal" not in d and "genotype" not in d and "normal_ops" in d:
            return _from_ops(spec, d)
        space = d.get("space")
        g = load_genotype(spec)
        return _from_genotype(spec, g, get_space(space).name if space else None)
    if spec.endswith(".json"):
        raise FileNotFoundError(f"genotype file {spec!r} does not exist")
    return _from_genotype(_short(spec), load_genotype(spec), None)


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def check_ops(arch: Architecture, space: SearchSpace) -> None:
    """Checks that every edge's op is one of that edge's candidates (or ``none``).

    Raises:
      ValueError: naming the cell, edge and op, and the edge's candidates.
    """
    if arch.space is not None and arch.space != space.name:
        raise ValueError(
            f"{arch.label}: the file is for space {arch.space!r} (its 'space' "
            f"entry), but the supernet's space is {space.name!r}"
        )
    for cell, ops in (("normal", arch.normal_ops), ("reduce", arch.reduce_ops)):
        candidates = space.ops(cell == "reduce")
        for e, op in enumerate(ops):
            if op != "none" and op not in candidates[e]:
                raise ValueError(
                    f"{arch.label}: op {op!r} on {cell} edge {e} is not in search "
                    f"space {space.name!r} (that edge offers {list(candidates[e])}, "
                    "or none)"
                )


@functools.lru_cache(maxsize=16)
def make_scorer(net: Any, reward: RewardConfig) -> Callable[..., Any]:
    """The jitted batched scorer of a supernet and reward (cached per pair).

    Returns:
      ``f(variables, arch_normal, arch_reduce, images, labels, key) -> (rewards [A],
      valid [A])``, a jitted :func:`jaxdarts.rewards.score_architectures`.
    """
    import jax

    from jaxdarts.rewards import score_architectures

    def score(variables, arch_normal, arch_reduce, images, labels, key):
        return score_architectures(
            net, variables, arch_normal, arch_reduce, images, labels, reward, key
        )

    return jax.jit(score)


def _space_of(cfg: Mapping[str, Any], archs: Sequence[Architecture]) -> SearchSpace:
    if cfg["supernet"]["space"] is not None:
        return get_space(cfg["supernet"]["space"])
    named = sorted({a.space for a in archs if a.space is not None})
    if len(named) > 1:
        raise ValueError(
            f"the genotype files name different spaces {named}; score them "
            "separately or pass --space"
        )
    return get_space(named[0] if named else "darts")


def _load_checkpoint(cfg: Mapping[str, Any]):
    """``(variables, meta, SupernetConfig)`` of ``supernet.checkpoint``, checked
    against the keys the config sets (null keys take the checkpoint's)."""
    s = cfg["supernet"]
    expect: dict[str, Any] = {}
    if s["space"] is not None:
        expect["space"] = get_space(s["space"]).name
    for name in ("channels", "layers"):
        if s[name] is not None:
            expect[name] = s[name]
    variables, meta = build.load_supernet(s["checkpoint"], expect or None)
    build.check_compat(meta, cfg["compat"] == "dartsrl", s["checkpoint"])
    return variables, meta, build.supernet_config_from_meta(meta, impl=s["impl"])


def _check_data(ds, batch: int, meta: dict[str, Any] | None, where: str | None):
    n_train = len(ds.train_labels)
    n_valid = n_train - n_train // 2
    if batch > n_valid:
        raise ValueError(
            f"batch size {batch} is larger than the {n_valid} validation images of "
            f"{ds.name!r} (the second half of its {n_train} train images)"
        )
    if meta is None:
        return
    if tuple(meta["image_shape"]) != ds.image_shape:
        raise ValueError(
            f"the supernet in {where} was trained on images of shape "
            f"{tuple(meta['image_shape'])}, but {ds.name!r} has {ds.image_shape}"
        )
    if int(meta["num_classes"]) != ds.num_classes:
        raise ValueError(
            f"the supernet in {where} has {meta['num_classes']} classes, but "
            f"{ds.name!r} has {ds.num_classes}"
        )
    if meta.get("dataset") not in (None, ds.name):
        _log.warning(
            "the supernet was trained on %r, scoring on %r", meta["dataset"], ds.name
        )


@dataclasses.dataclass(frozen=True)
class ScoreSetup:
    """Everything a scoring run needs, checked (:func:`prepare`).

    Attributes:
      archs: the architectures, in the given order.
      dataset: the loaded dataset.
      net: the :class:`~jaxdarts.supernet.Supernet`.
      reward: the :class:`~jaxdarts.rewards.RewardConfig`.
      batch_size: images per score.
      seeds: the number of seeds.
      checkpoint: ``(variables, meta)`` of a pre-trained supernet, or None.
      mean, std: the normalisation (the checkpoint's if given).
      settings: what the records were scored with (JSON-able).
    """

    archs: list[Architecture]
    dataset: Any
    net: Any
    reward: RewardConfig
    batch_size: int
    seeds: int
    checkpoint: tuple[Any, dict[str, Any]] | None
    mean: Any
    std: Any
    settings: dict[str, Any]


def prepare(genotypes: Sequence[Any], cfg: Mapping[str, Any]) -> ScoreSetup:
    """Every check of a scoring run (genotypes, space, ops, data, batch size,
    checkpoint), before anything is compiled.

    Raises:
      ValueError, FileNotFoundError: bad input.
      jaxdarts.data.DataNotFoundError: a TFDS dataset that is not prepared.
    """
    from jaxdarts.configs.score import DEFAULT_CHANNELS, DEFAULT_LAYERS, batch_size
    from jaxdarts.supernet import get_supernet

    if not genotypes:
        raise ValueError("give at least one genotype to score (--genotype)")
    archs = [resolve_architecture(g) for g in genotypes]
    ckpt, where = None, cfg["supernet"]["checkpoint"]
    if where is not None:
        variables, meta, net_config = _load_checkpoint(cfg)
        ckpt, space = (variables, meta), get_space(net_config.space)
    else:
        space = _space_of(cfg, archs)
    for a in archs:
        check_ops(a, space)
    ds = build.load_data(cfg["data"])
    batch = batch_size(cfg)
    _check_data(ds, batch, None if ckpt is None else ckpt[1], where)
    if ckpt is None:
        s = cfg["supernet"]
        net_config = build.supernet_config(
            {
                **s,
                "space": space.name,
                "channels": s["channels"] or DEFAULT_CHANNELS,
                "layers": s["layers"] or DEFAULT_LAYERS,
            },
            ds.num_classes,
            cfg["compat"],
        )
    r = cfg["reward"]
    reward = build.reward_config(
        r["kind"], r["path"], r["nwot_flavour"], None, r.get("bn_mode", "eval")
    )
    mean, std = (ds.mean, ds.std) if ckpt is None else (ckpt[1]["mean"], ckpt[1]["std"])
    settings = {
        **{k: v for k, v in cfg.items() if k not in ("data", "supernet", "reward")},
        **cfg["reward"],
        **cfg["data"],
        "reward": r["kind"],
        "batch_size": batch,
        "bn_train": reward.bn_train,
        "supernet_ckpt": where,
        "dataset": ds.name,
        "image_shape": list(ds.image_shape),
        "invalid_reward": reward.invalid_reward,
        **dataclasses.asdict(net_config),
    }
    settings.pop("kind", None)
    return ScoreSetup(
        archs,
        ds,
        get_supernet(net_config),
        reward,
        batch,
        cfg["seeds"],
        ckpt,
        mean,
        std,
        settings,
    )


def _arch_inputs(setup: ScoreSetup):
    """The stacked per-edge choices (discrete path) or one-hot weights (dense)."""
    import jax
    import jax.numpy as jnp

    net = setup.net
    choices = [net.choices_from_ops(a.normal_ops, a.reduce_ops) for a in setup.archs]
    cn = jnp.stack([c[0] for c in choices])
    cr = jnp.stack([c[1] for c in choices])
    if setup.reward.path == "dense":
        return choices, jax.vmap(net.one_hot_weights)(cn, cr)
    return choices, (cn, cr)


def _seed_batch(setup: ScoreSetup, s: int):
    """Seed ``s``'s batch: ``default_rng(s)`` draws from the validation half; the
    original NWOT flavour takes that half's first 128 images, un-augmented
    (:func:`jaxdarts.env.nwot_original_batch`, the batch a search scores on)."""
    import jax.numpy as jnp

    from jaxdarts.data import normalize, split_indices

    ds = setup.dataset
    meta = None if setup.checkpoint is None else setup.checkpoint[1]
    split_seed = build.split_seed_of(meta, s)
    pool = split_indices(len(ds.train_labels), split_seed)[1]
    if setup.settings.get("nwot_flavour") == "original" and setup.reward.kind == "nwot":
        from jaxdarts.env import nwot_original_batch

        return nwot_original_batch(
            ds.train_images[pool], ds.train_labels[pool], setup.mean, setup.std
        )
    rng = np.random.default_rng(s)
    idx = np.sort(rng.choice(pool, setup.batch_size, replace=False))
    images = normalize(ds.train_images[idx], setup.mean, setup.std)
    return images, jnp.asarray(ds.train_labels[idx], jnp.int32)


def _score_seeds(setup: ScoreSetup, arch_n, arch_r, show_progress):
    """``(scores [A, S] float64, valid [A, S] bool)``, one jitted call per seed."""
    import jax
    import jax.numpy as jnp

    from jaxdarts.runs import progress

    seeds = setup.seeds
    if setup.checkpoint is None:
        # One trace of the init for all seeds; equal to net.init(key(i)) per seed.
        keys = jnp.stack([jax.random.key(i) for i in range(seeds)])
        shape = setup.dataset.image_shape
        all_vars = jax.vmap(lambda k: setup.net.init(k, shape))(keys)
    scorer = make_scorer(setup.net, setup.reward)
    scores = np.zeros((len(setup.archs), seeds), np.float64)
    valid = np.zeros((len(setup.archs), seeds), bool)
    disable = None if show_progress is None else not show_progress
    with progress(seeds, "scoring", disable=disable, unit="seed") as bar:
        for s in range(seeds):
            if setup.checkpoint is None:
                variables = jax.tree.map(lambda a, s=s: a[s], all_vars)
            else:
                variables = setup.checkpoint[0]
            images, labels = _seed_batch(setup, s)
            key = jax.random.fold_in(jax.random.key(s), 1)
            r, ok = scorer(variables, arch_n, arch_r, images, labels, key)
            scores[:, s] = np.asarray(r, np.float64)
            valid[:, s] = np.asarray(ok)
            bar.update(1)
    return scores, valid


def _records(setup: ScoreSetup, choices, scores, valid) -> list[dict[str, Any]]:
    records = []
    names = setup.net.op_names
    for a, c, sc, ok in zip(setup.archs, choices, scores, valid, strict=True):
        records.append(
            {
                "genotype": a.label,
                "reward": setup.reward.kind,
                "mean": float(sc.mean()),
                "std": float(sc.std()),
                "n": setup.seeds,
                "scores": [float(x) for x in sc],
                "valid": [bool(x) for x in ok],
                "invalid_reward": setup.reward.invalid_reward,
                "normal_ops": [names[i] for i in np.asarray(c[0])],
                "reduce_ops": [names[i] for i in np.asarray(c[1])],
            }
        )
        if not ok.all():
            _log.warning(
                "%s: %d of %d scores invalid (singular kernel or non-finite), "
                "scored %s",
                a.label,
                int((~ok).sum()),
                len(ok),
                setup.reward.invalid_reward,
            )
    return records


def score_genotypes(
    genotypes: Sequence[str | Genotype | Architecture],
    config: Mapping[str, Any] | None = None,
    *,
    show_progress: bool | None = None,
    setup: ScoreSetup | None = None,
) -> dict[str, Any]:
    """Scores genotypes with a supernet reward, averaged over seeds.

    Every check (genotypes, space, ops, data, batch size, checkpoint) runs before
    anything is compiled (:func:`prepare`).

    Args:
      genotypes: specs accepted by :func:`resolve_architecture`.
      config: the validated config of ``configs/score.py``
        (:func:`jaxdarts.config.load`; None: the ``quick`` preset).
      show_progress: progress bar over seeds (``None``: when stderr is a terminal).
      setup: the result of :func:`prepare` (None: built here).

    Returns:
      ``{"settings": {...}, "records": [...]}`` with one record per genotype, in the
      given order: ``genotype``, ``reward``, ``mean``, ``std``, ``n``, ``scores``,
      ``valid``, ``invalid_reward`` (the kind's value of an invalid score),
      ``normal_ops``, ``reduce_ops``.
    """
    if setup is None:
        if config is None:
            from jaxdarts.config import load

            config = load("score", preset="quick")
        setup = prepare(genotypes, config)
    s = setup.settings
    _log.info(
        "scoring %d genotype(s) by %s on %s: %s supernet, C=%d, %d cells, %s, "
        "%s path, batch %d, %d seed(s); the first seed includes compiling",
        len(setup.archs),
        setup.reward.kind,
        s["dataset"],
        s["space"],
        s["channels"],
        s["layers"],
        "untrained" if setup.checkpoint is None else "pre-trained",
        setup.reward.path,
        setup.batch_size,
        setup.seeds,
    )
    choices, (arch_n, arch_r) = _arch_inputs(setup)
    scores, valid = _score_seeds(setup, arch_n, arch_r, show_progress)
    return {"settings": s, "records": _records(setup, choices, scores, valid)}


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: genotype, reward, mean, std, n."""
    rows = [("genotype", "reward", "mean", "std", "n")]
    for r in records:
        rows.append(
            (
                r["genotype"],
                r["reward"],
                f"{r['mean']:.4f}",
                f"{r['std']:.4f}",
                str(r["n"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[i].rjust(widths[i]) for i in range(2, 5)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
