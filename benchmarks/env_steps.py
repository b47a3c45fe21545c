"""Section ``env``: lockstep env steps/s against the number of envs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks import common as C


def run(rec: C.Recorder, quick: bool) -> None:
    """Lockstep env steps/s vs number of envs."""

    counts = (1, 16, 256) if quick else (1, 4, 16, 64, 256)
    paths = ("discrete",) if quick else ("discrete", "dense")
    for path in paths:
        for n in counts:
            cfg, params, venv = C.tiny_env(n, path)

            def run(key, params, nsteps, venv=venv, n=n, k_ops=cfg.num_ops):
                _, state = venv.reset(key, params)

                def body(i, carry):
                    state, acc = carry
                    k = jax.random.fold_in(key, i)
                    a = jax.random.randint(k, (n,), 0, k_ops)
                    _, state, r, _, _, _ = venv.step(k, state, a, params)
                    return state, acc + r.sum()

                return lax.fori_loop(0, nsteps, body, (state, jnp.float32(0)))[1]

            key = jax.random.key(1)
            conf = {"num_envs": n, "path": path, "supernet": "C4-L2-B16-8x8x1"}
            compiled, tc = C.compile_fn(run, key, params, jnp.int32(1))
            ep = cfg.episode_length
            alpha_steps = ep - 1  # never reaches the episode end
            dt = C.time_calls(
                compiled, key, params, jnp.int32(alpha_steps), min_time=0.3
            )
            rec.add(
                "env",
                f"{path} n={n} alpha-only steps/s",
                n * alpha_steps / dt,
                "1/s",
                **conf,
            )
            episodes = 1 if quick else 2
            dt = C.time_calls(
                compiled,
                key,
                params,
                jnp.int32(ep * episodes),
                min_time=0.3 if quick else 1.0,
                min_reps=1,
            )
            rec.add(
                "env",
                f"{path} n={n} full-episode steps/s",
                n * ep * episodes / dt,
                "1/s",
                **conf,
            )
            rec.add("env", f"{path} n={n} compile", tc, "s", **conf)
