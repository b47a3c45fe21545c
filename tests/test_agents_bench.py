"""benchmarks/agents.py numbers from hand-made metrics; reproduce.py imports."""

import argparse

import numpy as np

from benchmarks import agents, reproduce


def _metrics():
    # 2 seeds, 10 updates; seed 0's rewards rise, seed 1 has a null update
    out = []
    for u in range(10):
        out.append(
            {
                "update": u + 1,
                "num_episodes": [3, 3],
                "reward_mean": [float(u), None if u == 4 else 1.0],
                "reward_max": [float(u) + 0.5, None if u == 4 else 2.0 - u % 2],
            }
        )
    return out


def test_curves_and_seed_numbers_by_hand():
    c = agents.curves(_metrics(), 2)
    assert c["evals"][:, 0].tolist() == [3 * (u + 1) for u in range(10)]
    assert c["best"][:, 0].tolist() == [u + 0.5 for u in range(10)]
    assert c["best"][:, 1].tolist() == [2.0] * 10
    summary = {"seeds": [{"reward": 7.0}, {"reward": 1.5}]}
    nums = agents.seed_numbers(c, summary)
    # last 10% of 10 updates = the last update
    assert nums[0] == {"best": 9.5, "last10": 9.0, "final": 7.0, "evals": 30}
    assert nums[1]["last10"] == 1.0 and nums[1]["best"] == 2.0
    text = agents.table([{"method": "ppo", "seeds": nums, "wall_s": 1.0, "curve": {}}])
    m = np.mean([9.5, 2.0])
    assert f"{m:.4g} ± " in text and "| ppo |" in text


def test_reproduce_renders_a_partial_page():
    a = argparse.Namespace(
        steps=512,
        epochs=2,
        pretrain_epochs=1,
        seed=0,
        variants=list(reproduce.VARIANTS),
    )
    rows = {"disc-nwot": {"reward": 123.4, "accuracy": 80.0, "search_s": 1.0}}
    page = reproduce.render(rows, a, ["--steps", "512"], "now", None, done=False)
    assert "| `disc-nwot` | 123.4 | 80.00 | 96.74 ± 0.30 | 97.01 |" in page
    assert "not run (yet)" in page and "incomplete" in page
    assert "--steps 512" in page
    assert reproduce.needs_supernet("cont-acc-step")
    assert not reproduce.needs_supernet("disc-acc")
