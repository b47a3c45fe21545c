"""Section ``multihost``: one search as 1 process x 4 devices vs 2 processes x 2.

Calls :func:`jaxdarts.launch.benchmark_processes` (local processes over
``jax.distributed`` on localhost, forced CPU devices on a CPU): timesteps/s of the
last update of the same small search in each layout. On a CPU the devices share the
same cores, so the rows show the overhead of the multi-process machinery, not a
speed-up. Without :mod:`jaxdarts.launch` the section records one row saying so.
"""

from __future__ import annotations

from benchmarks import common as C


def run(rec: C.Recorder, quick: bool) -> None:
    """Timesteps/s of 1 x 4 and 2 x 2 (processes x devices)."""
    try:
        from jaxdarts.launch import benchmark_processes
    except ImportError:
        rec.add("multihost", "needs jaxdarts.launch", "skipped", "-")
        return
    for row in benchmark_processes(layouts=((1, 4), (2, 2))):
        name = f"{row['processes']} proc x {row['devices_per_process']} dev"
        conf = {k: row[k] for k in ("processes", "devices_per_process", "devices")}
        rec.add(
            "multihost", f"{name} timesteps/s", row["timesteps_per_s"], "1/s", **conf
        )
        rec.add("multihost", f"{name} wall time", row["wall_s"], "s", **conf)
