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
    "reward_forms",
    "roofline",
    "env_steps",
    "ppo",
    "training",
    "devices",
    "endtoend",
    "multihost",
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


def test_endtoend_reads_the_rate_after_compile(tmp_path):
    from benchmarks import endtoend as E

    recs = [
        {"steps_per_s": 1.0, "compile_s": 30.0},
        {"steps_per_s": 40.0, "compile_s": 0.0},
        {"steps_per_s": 60.0, "compile_s": 0.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    assert E.read_rate(str(tmp_path)) == (50.0, 30.0)
    cmd = E.search_command("disc-nwot", "paper", 512, ("compat=dartsrl",), "x.npz", "o")
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert "data.dataset=npz:x.npz" in sets and "compat=dartsrl" in sets
    assert f"run.total_steps={E.UPDATES * 512}" in sets


def test_endtoend_npz_is_loadable(tmp_path):
    from benchmarks import endtoend as E
    from jaxdarts.data import load_dataset

    ds = load_dataset("npz:" + E.write_npz(str(tmp_path / "c.npz"), 20))
    assert ds.image_shape == (32, 32, 3) and len(ds.train_images) == 20


def test_multihost_says_when_launch_is_missing(monkeypatch):
    from benchmarks import common as C
    from benchmarks import multihost

    monkeypatch.setitem(sys.modules, "jaxdarts.launch", None)  # import fails
    rec = C.Recorder(verbose=False)
    multihost.run(rec, quick=True)
    assert [r["item"] for r in rec.rows] == ["needs jaxdarts.launch"]


def test_endtoend_random_supernet_is_accepted_by_search(tmp_path):
    from benchmarks import endtoend as E
    from jaxdarts import build
    from jaxdarts import config as config_lib

    sets = ("compat=dartsrl", "supernet.channels=2", "supernet.layers=1")  # tiny
    sup = E.random_supernet(str(tmp_path / "sup"), "cont-acc-step", "quick", sets)
    cfg = config_lib.load(
        "search",
        preset="quick",
        variant="cont-acc-step",
        sets=(*sets, f"supernet.checkpoint={sup}"),
    )
    net = build.env_config(cfg, (32, 32, 3), 10).net
    _, meta = build.pretrained_supernet(sup, net, (32, 32, 3))  # raises on mismatch
    assert meta["swap_cells"] is True and meta["layers"] == net.layers
