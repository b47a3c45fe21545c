"""``python -m jaxdarts.score``: zero-cost scores of genotypes on a supernet.

Command line::

    python -m jaxdarts.score --genotype disc-nwot --genotype disc-acc --seeds 5
    python -m jaxdarts.score --genotype runs/x/genotype.json --reward nwot \\
        --nwot-flavour original --json scores.json
    python -m jaxdarts.score --preset quick --genotype disc-acc --reward acc \\
        --supernet-ckpt runs/pre

The config is ``configs/score.py`` (``--preset paper``: CIFAR-10 and the paper's
supernet; ``quick``: digits and the shared quick supernet) with flags and ``--set``
on top; :mod:`jaxdarts.scoring` does the work (see there for what a score is).

Output: a table (genotype, reward, mean, std, n) on stdout and, with ``--json OUT``, a
JSON object ``{"settings": {...}, "records": [...]}`` written atomically, with one
record per genotype: ``genotype`` (the name or path given), ``reward``, ``mean``,
``std``, ``n``, ``scores`` (one per seed), ``valid`` (one per seed), and the scored
``normal_ops`` / ``reduce_ops``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jaxdarts import cli
from jaxdarts.scoring import (
    Architecture,
    check_ops,
    format_table,
    make_scorer,
    resolve_architecture,
    score_genotypes,
)

__all__ = [
    "FLAGS",
    "Architecture",
    "resolve_architecture",
    "check_ops",
    "make_scorer",
    "score_genotypes",
    "format_table",
    "build_parser",
    "main",
]

#: The command's flags that set config keys.
FLAGS = {
    "--reward": "reward.kind",
    "--space": "supernet.space",
    "--dataset": "data.dataset",
    "--data-dir": "data.data_dir",
    "--batch-size": "reward.batch_size",
    "--seeds": "seeds",
    "--supernet-ckpt": "supernet.checkpoint",
    "--channels": "supernet.channels",
    "--layers": "supernet.layers",
    "--nwot-flavour": "reward.nwot_flavour",
    "--compat": "compat",
    "--path": "reward.path",
    "--impl": "supernet.impl",
}

_DESCRIPTION = """\
Score genotypes with a supernet reward (NWOT, accuracy or negative loss): mean and
std over seeds (seed i initialises the supernet and draws the batch)."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser and its argparse dest -> config key map."""
    p = cli.parser("score", _DESCRIPTION)
    p.add_argument(
        "--genotype",
        action="append",
        default=[],
        metavar="NAME|FILE.json",
        help="published genotype name (e.g. disc-nwot), genotype JSON file, DARTS "
        "Genotype(...) string, or a JSON file with a full assignment "
        "{normal_ops, reduce_ops}; repeatable, at least one",
    )
    flags = cli.add_config_flags(p, "score", FLAGS)
    p.add_argument(
        "--data",
        metavar="FILE.npz",
        help="an .npz dataset (arrays 'images' and 'labels'); same as "
        "--dataset npz:FILE.npz",
    )
    p.add_argument("--json", metavar="OUT", help="also write the records here")
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p, flags


def _main(argv: Sequence[str] | None) -> int:
    parser, flags = build_parser()
    args = parser.parse_args(argv)
    if args.data is not None:
        if args.dataset is not None:
            raise cli.UsageError("give --dataset or --data, not both")
        args.dataset = f"npz:{args.data}"
    cfg = cli.config_from_args("score", args, flags)
    if args.print_config:
        cli.print_config("score", cfg)
        return 0
    if not args.genotype:
        raise cli.UsageError("give at least one --genotype NAME|FILE.json to score")
    from jaxdarts import scoring
    from jaxdarts.runs import enable_compilation_cache, setup_logging

    logger = setup_logging(None)
    if args.json:
        cli.check_json_out(args.json)
    with cli.usage_errors():
        setup = scoring.prepare(args.genotype, cfg)
    if not args.no_compile_cache:
        enable_compilation_cache()
    progress = False if args.no_progress else None
    result = score_genotypes(args.genotype, show_progress=progress, setup=setup)
    print(format_table(result["records"]))
    if args.json:
        from jaxdarts.io import atomic_write_json

        atomic_write_json(args.json, result)
        logger.info("wrote %d records to %s", len(result["records"]), args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 2 bad input)."""
    return cli.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
