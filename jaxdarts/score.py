"""Scores genotypes with a supernet reward (NWOT, accuracy or negative loss).

Command line::

    python -m jaxdarts.score --genotype disc-nwot --genotype disc-acc --seeds 5
    python -m jaxdarts.score --genotype runs/x/genotype.json --reward nwot \\
        --dataset cifar10 --nwot-flavour original --json scores.json
    python -m jaxdarts.score --genotype disc-acc --reward acc --supernet-ckpt runs/pre

A genotype is scored as the 14-edge supernet whose genotype edges carry their op and
whose other edges carry ``none``: the supernet the reference's reward sees, restricted
to the genotype's edges. A JSON file may instead hold a *full assignment*,
``{"normal_ops": [14 op names], "reduce_ops": [14 op names], "space": ...}`` (one op per
edge of both cells, ``null`` for ``none``: what a discrete search episode ends with),
which is scored as it is.

For each of ``--seeds N`` seeds ``i = 0 .. N-1``: seed ``i`` initialises the supernet
(PyTorch's default initialisation from ``jax.random.key(i)``; a ``--supernet-ckpt`` is
used as it is) and picks the batch: ``batch_size`` images drawn without replacement
(``numpy.random.default_rng(i)``) from the validation half of the train set, i.e. the
second half of :func:`jaxdarts.data.split_indices` with seed ``i`` (with a checkpoint:
with the checkpoint's ``split_seed``, so the weights never saw the batch). Images are
normalised with the dataset's mean and std (the checkpoint's, if given) and not
augmented. All genotypes of one seed are scored in one jitted, batched call
(:func:`jaxdarts.rewards.score_architectures`); the result per genotype is the mean and
the (population, ``ddof=0``) standard deviation of its scores over the seeds.

NWOT flavours (decisions.md): ``reference`` (default) uses eval-mode BatchNorm (running
statistics) and a batch of 64; ``original`` (Mellor et al.) uses train-mode BatchNorm
(batch statistics) and a batch of 128. Both build the kernel from exact integer counts
and take the log-determinant in float64. A singular kernel scores ``invalid_reward``
(0.0) and is flagged in the record's ``valid`` list.

Output: a table (genotype, reward, mean, std, n) on stdout and, with ``--json OUT``, a
JSON object ``{"settings": {...}, "records": [...]}`` written atomically, with one
record per genotype: ``genotype`` (the name or path given), ``reward``, ``mean``,
``std``, ``n``, ``scores`` (one per seed), ``valid`` (one per seed), and the scored
``normal_ops`` / ``reduce_ops``.

References:
  Mellor, Turner, Storkey, Crowley. "Neural Architecture Search without Training",
  ICML 2021.
  Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search", ICLR 2019.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxdarts.genotypes import Genotype, genotype_edge_ops, load_genotype
from jaxdarts.rewards import REWARDS, RewardConfig
from jaxdarts.spaces import NUM_EDGES, SearchSpace, get_space

__all__ = [
    "NWOT_FLAVOURS",
    "ScoreConfig",
    "Architecture",
    "resolve_architecture",
    "check_ops",
    "make_scorer",
    "score_genotypes",
    "format_table",
    "build_parser",
    "main",
]

NWOT_FLAVOURS = ("reference", "original")
#: Default batch size of each NWOT flavour (decisions.md).
FLAVOUR_BATCH = {"reference": 64, "original": 128}

_log = logging.getLogger("jaxdarts.score")


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """How genotypes are scored.

    Attributes:
      reward: ``nwot``, ``acc`` or ``loss``.
      space: search-space name; ``None``: the checkpoint's, else the space named by
        the genotype files (they must agree), else ``darts``.
      dataset: ``digits``, a TFDS image-classification name, or ``npz:PATH``.
      data: a ``.npz`` file (overrides ``dataset``).
      data_dir: TFDS data directory.
      batch_size: images per batch; ``None``: 64 (``reference``) or 128
        (``original`` NWOT flavour).
      seeds: number of seeds (supernet initialisations and batches).
      supernet_ckpt: a pre-training run folder (or its ``supernet/`` folder); its
        configuration fixes space, channels, layers and the cell swap.
      channels: supernet channels C (untrained supernet only); ``None``: 16.
      layers: supernet cells (untrained supernet only); ``None``: 8.
      nwot_flavour: ``reference`` (eval-mode BN) or ``original`` (train-mode BN).
      compat: ``None`` or ``"dartsrl"`` (the reference's normal/reduce cell swap).
      path: ``discrete`` (only the chosen op per edge runs) or ``dense``.
      impl: depthwise conv / pool implementation (``auto``, ``shift``, ``xla``).
    """

    reward: str = "nwot"
    space: str | None = None
    dataset: str = "digits"
    data: str | None = None
    data_dir: str | None = None
    batch_size: int | None = None
    seeds: int = 1
    supernet_ckpt: str | None = None
    channels: int | None = None
    layers: int | None = None
    nwot_flavour: str = "reference"
    compat: str | None = None
    path: str = "discrete"
    impl: str = "auto"

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(
                f"unknown reward {self.reward!r}; choose one of {list(REWARDS)}"
            )
        if self.space is not None:
            get_space(self.space)
        if self.nwot_flavour not in NWOT_FLAVOURS:
            raise ValueError(
                f"unknown NWOT flavour {self.nwot_flavour!r}; choose one of "
                f"{list(NWOT_FLAVOURS)}"
            )
        if self.compat not in (None, "dartsrl"):
            raise ValueError(f"compat must be None or 'dartsrl', got {self.compat!r}")
        if self.path not in ("discrete", "dense"):
            raise ValueError(f"path must be 'discrete' or 'dense', got {self.path!r}")
        if self.impl not in ("auto", "shift", "xla"):
            raise ValueError(
                f"impl must be 'auto', 'shift' or 'xla', got {self.impl!r}"
            )
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        if self.batch_size is not None:
            low = 2 if self.reward == "nwot" else 1
            if not isinstance(self.batch_size, int) or self.batch_size < low:
                raise ValueError(
                    f"batch size must be an integer >= {low} for reward "
                    f"{self.reward!r}, got {self.batch_size!r}"
                )
        for name in ("channels", "layers"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

    @property
    def effective_batch_size(self) -> int:
        """``batch_size``, or the NWOT flavour's default."""
        if self.batch_size is not None:
            return self.batch_size
        return FLAVOUR_BATCH[self.nwot_flavour] if self.reward == "nwot" else 64

    @property
    def bn_train(self) -> bool:
        """Train-mode BatchNorm: the ``original`` NWOT flavour."""
        return self.reward == "nwot" and self.nwot_flavour == "original"


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


def _load_checkpoint(config: ScoreConfig):
    from jaxdarts.pretrain import load_supernet, supernet_config_from_meta

    expect: dict[str, Any] = {}
    if config.space is not None:
        expect["space"] = get_space(config.space).name
    if config.channels is not None:
        expect["channels"] = config.channels
    if config.layers is not None:
        expect["layers"] = config.layers
    if config.compat is not None:
        expect["swap_cells"] = config.compat == "dartsrl"
    variables, meta = load_supernet(config.supernet_ckpt, expect or None)
    return variables, meta, supernet_config_from_meta(meta, impl=config.impl)


def _load_data(config: ScoreConfig):
    from jaxdarts.data import load_dataset, load_npz

    if config.data is not None:
        return load_npz(config.data)
    return load_dataset(config.dataset, config.data_dir)


def _space_of(config: ScoreConfig, archs: Sequence[Architecture]) -> SearchSpace:
    if config.space is not None:
        return get_space(config.space)
    named = sorted({a.space for a in archs if a.space is not None})
    if len(named) > 1:
        raise ValueError(
            f"the genotype files name different spaces {named}; score them "
            "separately or pass --space"
        )
    return get_space(named[0] if named else "darts")


def score_genotypes(
    genotypes: Sequence[str | Genotype | Architecture],
    config: ScoreConfig | None = None,
    *,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Scores genotypes with a supernet reward, averaged over seeds.

    Every check (genotypes, space, ops, data, batch size, checkpoint) runs before
    anything is compiled.

    Args:
      genotypes: specs accepted by :func:`resolve_architecture`.
      config: how to score (default :class:`ScoreConfig`).
      show_progress: progress bar over seeds (``None``: when stderr is a terminal).

    Returns:
      ``{"settings": {...}, "records": [...]}`` with one record per genotype, in the
      given order: ``genotype``, ``reward``, ``mean``, ``std``, ``n``, ``scores``,
      ``valid``, ``normal_ops``, ``reduce_ops``.

    Raises:
      ValueError, FileNotFoundError: bad input (before any compile).
      jaxdarts.data.DataNotFoundError: a TFDS dataset that is not prepared.
    """
    config = config or ScoreConfig()
    if not genotypes:
        raise ValueError("give at least one genotype to score")
    archs = [resolve_architecture(g) for g in genotypes]

    from jaxdarts.supernet import SupernetConfig, get_supernet

    ckpt_vars, meta = None, None
    if config.supernet_ckpt is not None:
        ckpt_vars, meta, net_config = _load_checkpoint(config)
        space = get_space(net_config.space)
    else:
        space = _space_of(config, archs)
    for a in archs:
        check_ops(a, space)

    ds = _load_data(config)
    batch = config.effective_batch_size
    n_train = len(ds.train_labels)
    n_valid = n_train - n_train // 2
    if batch > n_valid:
        raise ValueError(
            f"batch size {batch} is larger than the {n_valid} validation images of "
            f"{ds.name!r} (the second half of its {n_train} train images)"
        )
    if meta is not None:
        if tuple(meta["image_shape"]) != ds.image_shape:
            raise ValueError(
                f"the supernet in {config.supernet_ckpt} was trained on images of "
                f"shape {tuple(meta['image_shape'])}, but {ds.name!r} has "
                f"{ds.image_shape}"
            )
        if int(meta["num_classes"]) != ds.num_classes:
            raise ValueError(
                f"the supernet in {config.supernet_ckpt} has {meta['num_classes']} "
                f"classes, but {ds.name!r} has {ds.num_classes}"
            )
        if meta.get("dataset") not in (None, ds.name):
            _log.warning(
                "the supernet was trained on %r, scoring on %r",
                meta["dataset"],
                ds.name,
            )
        mean, std = meta["mean"], meta["std"]
    else:
        net_config = SupernetConfig(
            space=space.name,
            channels=16 if config.channels is None else config.channels,
            layers=8 if config.layers is None else config.layers,
            num_classes=ds.num_classes,
            impl=config.impl,
            swap_cells=config.compat == "dartsrl",
        )
        mean, std = ds.mean, ds.std
    net = get_supernet(net_config)
    choices = [net.choices_from_ops(a.normal_ops, a.reduce_ops) for a in archs]
    reward_config = RewardConfig(
        kind=config.reward, path=config.path, bn_train=config.bn_train
    )
    settings = {
        **dataclasses.asdict(config),
        "batch_size": batch,
        "bn_train": config.bn_train,
        "dataset": ds.name,
        "image_shape": list(ds.image_shape),
        "space": net_config.space,
        "channels": net_config.channels,
        "layers": net_config.layers,
        "num_classes": net_config.num_classes,
        "swap_cells": net_config.swap_cells,
        "invalid_reward": reward_config.invalid_reward,
    }

    # ---- everything above is checks; compiles start here
    import jax
    import jax.numpy as jnp

    from jaxdarts.data import normalize, split_indices
    from jaxdarts.runs import progress

    cn = jnp.stack([c[0] for c in choices])
    cr = jnp.stack([c[1] for c in choices])
    if config.path == "dense":
        wn, wr = jax.vmap(net.one_hot_weights)(cn, cr)
        arch_n, arch_r = wn, wr
    else:
        arch_n, arch_r = cn, cr
    scorer = make_scorer(net, reward_config)
    seeds = list(range(config.seeds))
    _log.info(
        "scoring %d genotype(s) by %s on %s: %s supernet, C=%d, %d cells, %s, "
        "%s path, batch %d, %d seed(s); the first seed includes compiling",
        len(archs),
        config.reward,
        ds.name,
        space.name,
        net_config.channels,
        net_config.layers,
        "pre-trained" if meta is not None else "untrained",
        config.path,
        batch,
        len(seeds),
    )
    if ckpt_vars is None:
        # One trace of the init for all seeds; equal to net.init(key(i)) per seed.
        keys = jnp.stack([jax.random.key(i) for i in seeds])
        all_vars = jax.vmap(lambda k: net.init(k, ds.image_shape))(keys)
    split_seed = None if meta is None else int(meta.get("split_seed", meta["seed"]))
    scores = np.zeros((len(archs), len(seeds)), np.float64)
    valid = np.zeros((len(archs), len(seeds)), bool)
    disable = None if show_progress is None else not show_progress
    with progress(len(seeds), "scoring", disable=disable, unit="seed") as bar:
        for s in seeds:
            if ckpt_vars is None:
                variables = jax.tree.map(lambda a, s=s: a[s], all_vars)
            else:
                variables = ckpt_vars
            pool = split_indices(n_train, s if split_seed is None else split_seed)[1]
            idx = np.sort(np.random.default_rng(s).choice(pool, batch, replace=False))
            images = normalize(ds.train_images[idx], mean, std)
            labels = jnp.asarray(ds.train_labels[idx], jnp.int32)
            key = jax.random.fold_in(jax.random.key(s), 1)
            r, ok = scorer(variables, arch_n, arch_r, images, labels, key)
            scores[:, s] = np.asarray(r, np.float64)
            valid[:, s] = np.asarray(ok)
            bar.update(1)
    records = []
    for a, c, sc, ok in zip(archs, choices, scores, valid, strict=True):
        records.append(
            {
                "genotype": a.label,
                "reward": config.reward,
                "mean": float(sc.mean()),
                "std": float(sc.std()),
                "n": len(seeds),
                "scores": [float(x) for x in sc],
                "valid": [bool(x) for x in ok],
                "normal_ops": [net.op_names[i] for i in np.asarray(c[0])],
                "reduce_ops": [net.op_names[i] for i in np.asarray(c[1])],
            }
        )
        if not ok.all():
            _log.warning(
                "%s: %d of %d scores invalid (singular kernel or non-finite), "
                "scored %s",
                a.label,
                int((~ok).sum()),
                len(ok),
                reward_config.invalid_reward,
            )
    return {"settings": settings, "records": records}


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


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m jaxdarts.score`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m jaxdarts.score",
        description=(
            "Score genotypes with a supernet reward (NWOT, accuracy or negative "
            "loss), mean and std over seeds."
        ),
    )
    p.add_argument(
        "--genotype",
        action="append",
        required=True,
        metavar="NAME|FILE.json",
        help=(
            "published genotype name (e.g. disc-nwot), genotype JSON file, or a JSON "
            "file with a full assignment {normal_ops, reduce_ops}; repeatable"
        ),
    )
    p.add_argument("--reward", default="nwot", help=f"one of {list(REWARDS)}")
    p.add_argument(
        "--space",
        default=None,
        help="search space (default: the checkpoint's or the files', else darts)",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument("--dataset", default="digits", help="digits or a TFDS name")
    data.add_argument("--data", default=None, metavar="FILE.npz", help=".npz dataset")
    p.add_argument("--data-dir", default=None, help="TFDS data directory")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch (default 64; 128 with --nwot-flavour original)",
    )
    p.add_argument(
        "--seeds", type=int, default=1, help="number of seeds (inits and batches)"
    )
    p.add_argument(
        "--supernet-ckpt",
        default=None,
        metavar="DIR",
        help="pre-trained supernet (else an untrained one from each seed)",
    )
    p.add_argument("--channels", type=int, default=None, help="supernet C (16)")
    p.add_argument("--layers", type=int, default=None, help="supernet cells (8)")
    p.add_argument(
        "--nwot-flavour",
        default="reference",
        help="reference (eval-mode BN, batch 64) or original (train-mode BN, 128)",
    )
    p.add_argument(
        "--compat",
        default=None,
        help="dartsrl: the reference's normal/reduce cell swap (default: none)",
    )
    p.add_argument(
        "--path", default="discrete", help="supernet path: discrete or dense"
    )
    p.add_argument(
        "--impl", default="auto", help="conv/pool implementation: auto, shift, xla"
    )
    p.add_argument("--json", default=None, metavar="OUT", help="write records here")
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Exit status: 0 done, 1 data not found, 2 bad arguments or input.
    """
    from jaxdarts.data import DataNotFoundError
    from jaxdarts.runs import enable_compilation_cache, setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = ScoreConfig(
            reward=args.reward,
            space=args.space,
            dataset=args.dataset,
            data=args.data,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            seeds=args.seeds,
            supernet_ckpt=args.supernet_ckpt,
            channels=args.channels,
            layers=args.layers,
            nwot_flavour=args.nwot_flavour,
            compat=None if args.compat in (None, "none") else args.compat,
            path=args.path,
            impl=args.impl,
        )
    except ValueError as e:
        parser.error(str(e))
    logger = setup_logging(None)
    if not args.no_compile_cache:
        enable_compilation_cache()
    try:
        result = score_genotypes(
            args.genotype, config, show_progress=False if args.no_progress else None
        )
    except DataNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    print(format_table(result["records"]))
    if args.json:
        from jaxdarts.io import atomic_write_json

        atomic_write_json(args.json, result)
        logger.info("wrote %d records to %s", len(result["records"]), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
