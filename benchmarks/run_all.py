#!/usr/bin/env python
"""jaxdarts benchmarks: one entry point, one table, one JSON file.

Usage::

    python benchmarks/run_all.py [--quick] [--only SECTION ...] [--json OUT] [--plot OUT.png]
    python benchmarks/run_all.py --compare A.json B.json

Each section lives in its own module of this folder (see ``SECTIONS``); see
``benchmarks/README.md`` for what each measures. Every timed function is compiled
first (compile time recorded separately), warmed up once, then timed with
``block_until_ready``. JAX's persistent compilation cache is off so compile times are
real.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Sequence

if __package__ in (None, ""):  # run as a script: import the package from the repo root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# section name -> module of this package with ``run(rec, quick)``
SECTIONS = {
    "rewards": "rewards",
    "reward_forms": "reward_forms",
    "nwot_roofline": "roofline",
    "env": "env_steps",
    "ppo": "ppo",
    "train": "training",
    "devices": "devices",
    "search": "endtoend",
    "multihost": "multihost",
    "reference": "reference",
    "gpu": "gpu",
    "agents": "agents",
}
DEFAULT = (
    "rewards",
    "nwot_roofline",
    "env",
    "ppo",
    "train",
    "devices",
    "search",
    "multihost",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/run_all.py",
        description="jaxdarts throughput benchmarks (table + JSON).",
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes: checks the script quickly"
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(SECTIONS),
        metavar="SECTION",
        help=f"sections to run (default: {' '.join(DEFAULT)}); "
        f"also: reference (needs --reference), gpu, agents (PPO against random search)",
    )
    p.add_argument("--json", metavar="OUT", help="write the results here")
    p.add_argument("--plot", metavar="OUT.png", help="draw the scaling curves")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        help="print two result files side by side with B/A",
    )
    p.add_argument(
        "--reference",
        metavar="PATH",
        help="checkout of github.com/nidhishs/dartsrl (section 'reference')",
    )
    p.add_argument(
        "--reference-python",
        metavar="PATH",
        help="python of an environment with torch and stable-baselines3 "
        "(section 'reference'; default: this python)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads of each side of section 'reference' (default: all usable; "
        "1 on a shared machine)",
    )
    p.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks import common as C

    if args.compare:
        C.compare(*args.compare)
        return 0
    sections = list(args.only or DEFAULT)
    if "reference" in sections and not args.reference:
        raise SystemExit(
            "section 'reference' needs --reference PATH (a checkout of "
            "github.com/nidhishs/dartsrl); see benchmarks/README.md"
        )
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    meta = C.device_info()
    meta.update(quick=args.quick, argv=sys.argv[1:], started=time.strftime("%F %T"))
    print(C.describe(meta) + f", quick={args.quick}", flush=True)
    rec = C.Recorder()
    t_all = time.perf_counter()
    for name in sections:
        print(f"[{name}]", flush=True)
        module = importlib.import_module(f"benchmarks.{SECTIONS[name]}")
        t0 = time.perf_counter()
        if name == "reference":
            module.run(
                rec, args.quick, args.reference, args.reference_python, args.threads
            )
        else:
            module.run(rec, args.quick)
        rec.add(name, "section wall time", time.perf_counter() - t0, "s")
    meta["wall_s"] = time.perf_counter() - t_all
    meta["peak_rss_mib"] = C.peak_rss_mb()
    meta["load_average_1min_end"] = C.load_average()
    if not args.no_table:
        C.print_table(rec.rows)
    if args.json:
        C.write_json(args.json, meta, rec.rows)
        if not args.no_table:
            print(f"\nresults: {args.json}")
    if args.plot:
        from benchmarks.plots import plot

        plot(rec.rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
