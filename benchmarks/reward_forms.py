"""Section ``reward_forms``: the reward forms and the weight step only.

The part of section ``rewards`` that issue-style before/after tables need (one
discrete reward in every ``(impl, edges)`` form, fixed architectures, the NWOT
statistics' overhead, compile time, and the dense weight step), without the
rewards/s sweep over call sizes and paths.
"""

from __future__ import annotations

from benchmarks import common as C
from benchmarks.rewards import run_forms, run_weight_step


def run(rec: C.Recorder, quick: bool) -> None:
    """:func:`~benchmarks.rewards.run_forms` then the weight step."""
    run_forms(rec, quick)
    run_weight_step(rec, quick)
