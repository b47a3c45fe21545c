"""What the four commands share: config flags, run-folder flags, exit codes.

Every command builds its parser with :func:`parser`, adds its own flags, and maps
flags to config keys; :func:`config_from_args` then builds the validated config
(``--preset``, ``--variant``, flags, ``--set``) and :func:`run_main` turns known
errors into one line on stderr and exit code 2, and Ctrl-C into exit code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxdarts import config as config_lib

__all__ = [
    "UsageError",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "parser",
    "add_run_args",
    "add_config_flags",
    "config_from_args",
    "check_run_args",
    "check_out",
    "check_resume_dir",
    "check_json_out",
    "check_saved_command",
    "usage_errors",
    "print_config",
    "run_main",
]

#: Exit code of bad input (argparse's own).
EXIT_USAGE = 2
#: Exit code after Ctrl-C (128 + SIGINT), once the checkpoint is saved.
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad input found before the run starts: a flag, a file, a folder, the data."""


class _Formatter(
    argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter
):
    """Shows ``(default: X)`` only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def _preset_epilog(command: str) -> str:
    """One line per preset: its dataset (the default preset first)."""
    lines = ["presets (--preset NAME --print-config shows every value):"]
    for name in config_lib.presets(command):
        data = config_lib.preset_value(command, name, "data.dataset")
        where = f"dataset {data}" if data is not None else ""
        default = " (default)" if name == "paper" else ""
        lines.append(f"  {name}{default}: {where}".rstrip(": "))
    return "\n".join(lines)


def parser(command: str, description: str) -> argparse.ArgumentParser:
    """A parser with the config flags every command has.

    Adds ``--preset`` (and ``--variant`` where the command has variants), ``--set``
    (repeatable) and ``--print-config``; the help ends with each preset's dataset.
    """
    p = argparse.ArgumentParser(
        prog=f"python -m jaxdarts.{command}",
        description=description,
        epilog=_preset_epilog(command),
        formatter_class=_Formatter,
    )
    names = config_lib.presets(command)
    p.add_argument(
        "--preset",
        default="paper",
        choices=names,
        help="paper: the paper's setting (CIFAR-10); quick: the shared small size "
        "on the embedded digits data, minutes on a laptop CPU",
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
        help="continue the run in DIR from its newest checkpoint that restores (a "
        "damaged newer one is skipped with a warning). A changed config is refused, "
        "listing the differences, except: data.data_dir, and for a search a larger "
        "--total-steps, which extends a finished search",
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


def add_config_flags(
    p: argparse.ArgumentParser, command: str, flags: Mapping[str, str]
) -> dict[str, str]:
    """Adds flags that set config keys, with help from the command's schema.

    Each flag's value is text parsed and checked by the key's type and range (as
    ``--set``); its help is the key's explanation and its paper/quick defaults.

    Args:
      p: the parser.
      command: the command (its ``configs/<command>.py``).
      flags: flag (``"--num-envs"``) -> dotted config key (``"env.num_envs"``).

    Returns:
      argparse dest -> dotted key, for :func:`config_from_args`.
    """
    schema = config_lib.config_module(command).SCHEMA
    dests = {}
    for flag, dotted in flags.items():
        key = schema[dotted]
        paper = config_lib.preset_value(command, "paper", dotted)
        quick = config_lib.preset_value(command, "quick", dotted)
        default = f"default {json.dumps(paper)}"
        if quick != paper:
            default += f"; quick: {json.dumps(quick)}"
        action = p.add_argument(
            flag,
            metavar=dotted.rsplit(".", 1)[-1].upper(),
            help=f"{key.help}; {key.expected()} [{dotted}; {default}]",
        )
        dests[action.dest] = dotted
    return dests


def _flag_of(dotted: str, args: argparse.Namespace, flags: Mapping[str, str]):
    for dest, key in flags.items():
        if key == dotted and getattr(args, dest, None) is not None:
            return "--" + dest.replace("_", "-")
    return None


def _load_saved(path: str, command: str) -> dict[str, Any]:
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise UsageError(
            f"--resume {path}: no config.json there, so it is not a run folder "
            "(start a new run with --out instead)"
        )
    with open(file) as f:
        saved = json.load(f)
    check_saved_command(command, path, saved)
    return saved


_COMMANDS = ("search", "pretrain", "train", "score")


def check_saved_command(command: str, path: str, saved: Any) -> None:
    """Refuses to resume the run folder of another command (its ``config.json``
    holds another command's groups), naming the command that resumes it."""
    if not isinstance(saved, dict):
        raise UsageError(f"--resume {path}: its config.json is not a config")

    def fits(name: str) -> bool:
        groups = {k.split(".")[0] for k in config_lib.config_module(name).SCHEMA}
        return set(saved) <= groups

    if fits(command):
        return
    other = next((c for c in _COMMANDS if c != command and fits(c)), None)
    what = f"a {other} run" if other else "not a run of this command"
    fix = (
        f": continue it with python -m jaxdarts.{other} --resume {path}"
        if other
        else ""
    )
    raise UsageError(f"--resume {path} is {what} (see its config.json){fix}")


def config_from_args(
    command: str, args: argparse.Namespace, flags: Mapping[str, str]
) -> dict[str, Any]:
    """The validated config from ``--preset``/``--variant``, flags and ``--set``.

    With ``--resume DIR`` (where the parser has it) the config is the run's saved
    ``config.json`` with the flags and ``--set`` applied on top (the command then
    refuses changes to keys outside its ``RESUME_MAY_CHANGE``).

    Args:
      command: the command's name (its ``configs/<command>.py``).
      args: parsed arguments.
      flags: argparse dest -> dotted config key, for the command's own flags; a flag
        left at None keeps the config's value.

    Raises:
      UsageError: an unknown key or a bad value (the message names the key and the
        flag that set it).
    """
    overrides = {key: getattr(args, dest, None) for dest, key in flags.items()}
    try:
        if getattr(args, "resume", None):
            return config_lib.load_saved(
                command,
                _load_saved(args.resume, command),
                overrides=overrides,
                sets=args.set,
            )
        return config_lib.load(
            command,
            preset=args.preset,
            variant=getattr(args, "variant", None),
            overrides=overrides,
            sets=args.set,
        )
    except config_lib.ConfigError as e:
        flag = _flag_of(getattr(e, "key", None) or "", args, flags)
        raise UsageError(f"{flag}: {e}" if flag else str(e)) from None


def check_run_args(args: argparse.Namespace) -> None:
    """Refuses run-folder flags that contradict each other (before any work)."""
    if getattr(args, "resume", None) and (args.out or args.overwrite):
        raise UsageError(
            f"--resume {args.resume} continues that folder: drop --out/--overwrite"
        )
    devices = getattr(args, "devices", None)
    if devices is not None and devices < 1:
        raise UsageError(f"--devices must be >= 1, got {devices}")
    if getattr(args, "out", None):
        check_out(args.out, overwrite=bool(getattr(args, "overwrite", False)))
    if getattr(args, "resume", None):
        check_resume_dir(args.resume)


def check_out(out: str, *, overwrite: bool) -> None:
    """``--out``: refuses a file, a folder that is no run folder, a run folder
    without ``--overwrite`` and an unwritable place (before any work)."""
    from jaxdarts.runs import check_out as check

    try:
        check(out, overwrite=overwrite)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_json_out(path: str, flag: str = "--json") -> None:
    """An output file that can be written (checked before the work): not a
    folder, in a writable folder."""
    from jaxdarts.runs import check_writable

    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a folder: give a file name")
    try:
        check_writable(os.path.dirname(os.path.abspath(path)), flag)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_resume_dir(path: str) -> None:
    """``--resume DIR``: a run folder that can be written (the run appends to it)."""
    from jaxdarts.runs import check_writable, looks_like_run

    if os.path.exists(path) and not looks_like_run(Path(path)):
        raise UsageError(
            f"--resume {path}: no config.json there, so it is not a run folder "
            "(start a new run with --out instead)"
        )
    if os.path.isdir(path):
        try:
            check_writable(path, "--resume")
        except ValueError as e:
            raise UsageError(str(e)) from None


def print_config(command: str, config: Mapping[str, Any]) -> None:
    """Prints ``config`` with the explanation of every key."""
    print(config_lib.describe(command, config))


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Turns the errors of bad input found while setting up (a bad value, a missing
    file or folder, data that is not prepared) into :class:`UsageError`.

    Use it around what runs before the run folder is created, not around the run.
    """
    from jaxdarts.data import DataNotFoundError

    try:
        yield
    except DataNotFoundError as e:
        raise UsageError(
            f"{e}\nOr try the embedded data first: --preset quick (digits)."
        ) from None
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise UsageError(str(e)) from None


def _known_errors() -> tuple[type[BaseException], ...]:
    from jaxdarts.checkpoint import CorruptCheckpointError
    from jaxdarts.runs import ConfigMismatchError, RunExistsError, RunFolderError

    return (
        UsageError,
        config_lib.ConfigError,
        RunExistsError,
        RunFolderError,
        ConfigMismatchError,
        CorruptCheckpointError,
    )


def run_main(fn: Callable[[Sequence[str] | None], int], argv=None) -> int:
    """Runs a command's ``fn(argv)``: bad input -> ``error: ...`` and exit 2.

    ``KeyboardInterrupt`` reaching here (the command saved what it could) gives
    exit code 130.
    """
    try:
        return fn(argv)
    except _known_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
