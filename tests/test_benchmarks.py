"""Benchmark package smoke test: every section imports, the driver compares results.

No timing is run or asserted here (the benchmarks are run by hand).
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = [
    "rewards",
    "roofline",
    "env_steps",
    "ppo",
    "training",
    "devices",
    "gpu",
    "agents",
]


def _run(*args, cwd=ROOT):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_every_section_imports_and_has_run():
    # reference.py must import without jax: its reference side runs under a Python
    # that has torch but no jax.
    code = "import sys, benchmarks.reference as r; assert 'jax' not in sys.modules; "
    code += "; ".join(
        f"import benchmarks.{m} as m; assert callable(m.run), '{m}'" for m in SECTIONS
    )
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_run_all_compare_prints_ratio(tmp_path):
    rows_a = [{"section": "ppo", "item": "x timesteps/s", "value": 50.0, "unit": "1/s"}]
    rows_b = [
        {"section": "ppo", "item": "x timesteps/s", "value": 200.0, "unit": "1/s"}
    ]
    for name, rows in (("a", rows_a), ("b", rows_b)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"meta": {}, "rows": rows}))
    # Run from another folder: the script must find its package by itself.
    proc = _run(
        os.path.join(ROOT, "benchmarks", "run_all.py"),
        "--compare",
        str(tmp_path / "a.json"),
        str(tmp_path / "b.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if "x timesteps/s" in ln)
    assert line.split()[-2] == "4"  # B/A


def test_reference_section_refuses_a_missing_checkout(tmp_path):
    proc = _run(
        os.path.join(ROOT, "benchmarks", "run_all.py"),
        "--only",
        "reference",
        "--reference",
        str(tmp_path),
    )
    assert proc.returncode != 0
    assert "nidhishs/dartsrl" in proc.stderr and "--reference" in proc.stderr
