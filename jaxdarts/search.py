"""``python -m jaxdarts.search``: the paper's PPO architecture search, end to end.

The command parses its flags, builds the validated config (``configs/search.py``:
base + variant + preset + flags + ``--set``), checks everything that is cheap (the
data, the pre-trained supernet, the devices) before any run folder exists, and calls
:func:`jaxdarts.searching.run`. ``--print-config`` shows the config with an
explanation of each key.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from jaxdarts import cli
from jaxdarts import config as config_lib
from jaxdarts.configs.search import PRESETS, VARIANTS

__all__ = [
    "FLAGS",
    "VARIANTS",
    "PRESETS",
    "build_parser",
    "make_config",
    "set_override",
    "resolve",
    "run",
    "main",
]

#: The search's own flags and the config keys they set.
FLAGS = {
    "--space": "supernet.space",
    "--dataset": "data.dataset",
    "--data-dir": "data.data_dir",
    "--seed": "seed",
    "--seeds": "seeds",
    "--num-envs": "env.num_envs",
    "--total-steps": "run.total_steps",
    "--supernet-ckpt": "supernet.checkpoint",
    "--compat": "compat",
    "--agent": "agent",
}

_DESCRIPTION = """\
PPO search over DARTS cells (Shah, 'Exploring the Landscape of Differentiable
Architecture Search with RL'). Writes a run folder: genotype.json, cells.png,
curves.png, metrics.jsonl, top_architectures.json, summary.json, checkpoints/."""


def make_config(
    variant: str = "disc-nwot", preset: str = "paper", **sets: Any
) -> dict[str, Any]:
    """The validated config of a variant and preset, plus dotted overrides
    (``{"env.num_envs": 4}``). Raises :class:`jaxdarts.config.ConfigError`."""
    return config_lib.load("search", preset=preset, variant=variant, overrides=sets)


def set_override(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Sets one key of a config (checked by :func:`jaxdarts.config.validate` when
    the config is used)."""
    schema = config_lib.config_module("search").SCHEMA
    config_lib.set_value(cfg, schema, dotted, value)


def resolve(cfg: dict[str, Any], image_shape=(32, 32, 3), num_classes: int = 10):
    """``(EnvConfig, PPOConfig, num_envs)`` of a config for a dataset's image shape
    and class count (:func:`jaxdarts.build.search_setup` takes them from the data)."""
    from jaxdarts import build

    config_lib.validate("search", cfg)
    env = build.env_config(cfg, image_shape, num_classes)
    num_envs = cfg["env"]["num_envs"]
    return env, build.ppo_config(cfg["ppo"], num_envs), num_envs


def run(cfg: dict[str, Any], out: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`jaxdarts.searching.run` (the search as a library call)."""
    from jaxdarts import searching

    config_lib.validate("search", cfg)
    return searching.run(cfg, out, **kwargs)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser and its flag -> config key map (argparse dests)."""
    p = cli.parser("search", _DESCRIPTION)
    flags = cli.add_config_flags(p, "search", FLAGS)
    cli.add_run_args(p, default_out="runs/<variant>-<time>")
    return p, flags


def _main(argv: Sequence[str] | None) -> int:
    parser, flags = build_parser()
    args = parser.parse_args(argv)
    cli.check_run_args(args)
    cfg = cli.config_from_args("search", args, flags)
    if args.print_config:
        cli.print_config("search", cfg)
        return 0
    from jaxdarts import searching
    from jaxdarts.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host runs: see README "Scaling out"
    if args.resume:
        searching.check_resume(cfg, args.resume)
    with cli.usage_errors():
        setup = searching.prepare(cfg, args.devices, args.tensorboard)
    result = searching.run(
        cfg,
        out=args.resume or args.out,
        resume=bool(args.resume),
        overwrite=args.overwrite,
        devices=args.devices,
        tensorboard=args.tensorboard,
        setup=setup,
    )
    return cli.EXIT_INTERRUPTED if result.get("interrupted") else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 2 bad input,
    130 interrupted with a checkpoint saved)."""
    return cli.run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
