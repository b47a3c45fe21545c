"""What the four commands share: config flags, run-folder flags, exit codes.

Every command builds its parser with :func:`parser`, adds its own flags, and maps
flags to config keys; :func:`config_from_args` then builds the validated config
(``--preset``, ``--variant``, flags, ``--set``) and :func:`run_main` turns known
errors into one line on stderr and exit code 2, and Ctrl-C into exit code 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jaxdarts import config as config_lib

__all__ = [
    "UsageError",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "parser",
    "add_run_args",
    "config_from_args",
    "print_config",
    "run_main",
]

#: Exit code of bad input (argparse's own).
EXIT_USAGE = 2
#: Exit code after Ctrl-C (128 + SIGINT), once the checkpoint is saved.
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad input found before the run starts: a flag, a file, a folder, the data."""


def parser(command: str, description: str) -> argparse.ArgumentParser:
    """A parser with the config flags every command has.

    Adds ``--preset`` (and ``--variant`` where the command has variants), ``--set``
    (repeatable) and ``--print-config``.
    """
    p = argparse.ArgumentParser(
        prog=f"python -m jaxdarts.{command}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    names = config_lib.presets(command)
    p.add_argument(
        "--preset",
        default="paper",
        choices=names,
        help="paper: the paper's setting; quick: a small size on the embedded "
        "digits data, minutes on a laptop CPU",
    )
    kinds = config_lib.variants(command)
    if kinds:
        p.add_argument(
            "--variant", default=kinds[0], choices=kinds, help="the paper's variant"
        )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value (repeatable); --print-config lists the keys",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config with an explanation of each key, and exit",
    )
    return p


def add_run_args(p: argparse.ArgumentParser, default_out: str) -> None:
    """``--out``, ``--resume``, ``--overwrite``, ``--devices``, ``--tensorboard``."""
    p.add_argument("--out", metavar="DIR", help=f"run folder (default {default_out})")
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its newest checkpoint (a changed config "
        "is refused, listing the differences)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run folder at --out (only a run folder or an "
        "empty one)",
    )
    p.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="split the batch over the first N devices (jax.sharding; default 1)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log metrics for TensorBoard under <run>/tb (needs the "
        "'tensorboard' extra)",
    )


def config_from_args(
    command: str, args: argparse.Namespace, flags: Mapping[str, str]
) -> dict[str, Any]:
    """The validated config from ``--preset``/``--variant``, flags and ``--set``.

    Args:
      command: the command's name (its ``configs/<command>.py``).
      args: parsed arguments.
      flags: argparse dest -> dotted config key, for the command's own flags; a flag
        left at None keeps the config's value.

    Raises:
      UsageError: an unknown key or a bad value (the message names the key).
    """
    overrides = {key: getattr(args, dest, None) for dest, key in flags.items()}
    try:
        return config_lib.load(
            command,
            preset=args.preset,
            variant=getattr(args, "variant", None),
            overrides=overrides,
            sets=args.set,
        )
    except config_lib.ConfigError as e:
        raise UsageError(str(e)) from None


def print_config(command: str, config: Mapping[str, Any]) -> None:
    """Prints ``config`` with the explanation of every key."""
    print(config_lib.describe(command, config))


def run_main(fn: Callable[[Sequence[str] | None], int], argv=None) -> int:
    """Runs a command's ``fn(argv)``: bad input -> ``error: ...`` and exit 2.

    ``KeyboardInterrupt`` reaching here (the command saved what it could) gives
    exit code 130.
    """
    try:
        return fn(argv)
    except (UsageError, config_lib.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
