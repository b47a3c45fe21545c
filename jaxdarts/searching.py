"""The search as library functions: build, the host loop over jitted chunks, outputs.

:func:`run` is ``config -> run folder``: :func:`prepare` (data, supernet, env params;
every check before anything is written), then the run folder, then the host loop
(:func:`train_loop`: one AOT-compiled chunk of PPO updates per call, metrics,
progress bar, checkpoints, Ctrl-C), then the outputs (:func:`final_architectures`,
:func:`write_outputs`: genotypes, top-k, pictures, ``curves.png``, ``summary.json``)
and a short summary on stdout.

``--seeds N`` runs N independent searches in one compiled program: ``lax.map`` over
seeds, so that the episode-end reward stays a real ``cond`` (a vmap would turn it
into a select that runs the supernet on every step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from typing import Any

import numpy as np

from jaxdarts import build

__all__ = [
    "SearchRun",
    "prepare",
    "check_resume",
    "top_k_track",
    "make_programs",
    "train_loop",
    "final_env_state",
    "final_rollout_program",
    "final_architectures",
    "write_outputs",
    "summary_items",
    "run",
    "default_out",
]

log = logging.getLogger("jaxdarts")

#: What a search's run folder holds (named in the end-of-run summary).
OUTPUTS = "genotype.json, cells.png, curves.png, metrics.jsonl, top_architectures.json"


# ----------------------------------------------------------------------- setup
def check_devices(devices: int | None, num_envs: int) -> None:
    """``--devices N``: N >= 1 and N divides the lockstep envs."""
    if devices is None:
        return
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    if num_envs % devices:
        raise ValueError(
            f"--devices {devices} must divide the number of envs ({num_envs}): "
            "choose --num-envs as a multiple of it"
        )
    from jaxdarts import sharding

    sharding.make_mesh(devices)  # more devices than there are: a ValueError now


def prepare(
    cfg: dict[str, Any], devices: int | None = None, tensorboard: bool = False
) -> build.SearchSetup:
    """Every check and the build of a search, before anything is written.

    Raises:
      ValueError, FileNotFoundError, ImportError: bad input (the message says
        what to change).
      jaxdarts.data.DataNotFoundError: the dataset is not prepared.
    """
    check_devices(devices, cfg["env"]["num_envs"])
    ckpt = cfg["supernet"]["checkpoint"]
    if ckpt and not os.path.isdir(ckpt):
        raise FileNotFoundError(f"--supernet-ckpt {ckpt}: no such folder")
    if tensorboard:
        from jaxdarts.runs import check_tensorboard

        check_tensorboard()
    return build.search_setup(cfg)


def check_resume(cfg: dict[str, Any], path: str) -> None:
    """Refuses (before any work) a ``--resume`` whose config changes keys other
    than ``RESUME_MAY_CHANGE``, listing the differences."""
    import json

    from jaxdarts.configs.search import RESUME_MAY_CHANGE
    from jaxdarts.runs import DEFAULT_RESUME_IGNORE, ConfigMismatchError, config_diff

    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        return  # RunDir.resume says that it is not a run folder
    with open(file) as f:
        saved = json.load(f)
    diff = config_diff(saved, cfg, DEFAULT_RESUME_IGNORE + RESUME_MAY_CHANGE)
    if diff:
        raise ConfigMismatchError(diff, path)
    _check_resume_extras(saved, cfg, path)


def _check_resume_extras(saved: dict, cfg: dict, path: str) -> None:
    """A resume may only lengthen a search, and needs a checkpoint to start from."""
    from jaxdarts.cli import UsageError

    before, after = saved["run"]["total_steps"], cfg["run"]["total_steps"]
    if after < before:
        raise UsageError(
            f"--resume {path}: run.total_steps may only grow on resume (to extend "
            f"the search), saved {before} > given {after}"
        )
    ckpts = os.path.join(path, "checkpoints")
    if not os.path.isdir(ckpts) or not any(n.isdigit() for n in os.listdir(ckpts)):
        raise UsageError(_no_checkpoint(path))


def default_out(cfg: dict[str, Any]) -> str:
    """``runs/<variant>-<YYYYmmdd-HHMMSS>``."""
    return os.path.join("runs", f"{cfg['variant']}-{time.strftime('%Y%m%d-%H%M%S')}")


# ----------------------------------------------------------------------- programs
def top_k_track(k: int):
    """A PPO ``track_fn`` keeping the ``k`` best valid episode-end architectures."""
    import jax
    import jax.numpy as jnp

    def track_fn(track, info, rewards, dones):
        valid = dones & info["valid"]
        cand_r = jnp.where(valid, info["raw_reward"], -jnp.inf).reshape(-1)
        cand_a = info["final_alphas"].reshape((-1,) + info["final_alphas"].shape[2:])
        all_r = jnp.concatenate([track["rewards"], cand_r])
        all_a = jnp.concatenate([track["alphas"], cand_a])
        top_r, idx = jax.lax.top_k(all_r, k)
        return {"rewards": top_r, "alphas": all_a[idx]}

    return track_fn


def make_programs(setup: build.SearchSetup, top_k: int, agent: str = "ppo"):
    """The jitted ``init(keys [S], env_params)`` and ``chunk(states, env_params,
    num_updates)`` over the seeds (``lax.map``; the chunk donates its states);
    ``agent="random"``: random search (:mod:`jaxdarts.ppo.random_agent`)."""
    import jax
    import jax.numpy as jnp

    from jaxdarts import env as env_lib
    from jaxdarts.ppo import make_train
    from jaxdarts.ppo.random_agent import make_random

    venv = env_lib.LockstepEnv(setup.env, setup.num_envs)
    make = make_random if agent == "random" else make_train
    init_fn, chunk_fn = make(setup.ppo, venv, top_k_track(top_k))
    track0 = {
        "rewards": jnp.full((top_k,), -jnp.inf, jnp.float32),
        "alphas": jnp.zeros((top_k, 2, 14, setup.env.num_ops), jnp.float32),
    }

    def init_all(keys, params):
        return jax.lax.map(lambda kp: init_fn(kp[0], kp[1], track0), (keys, params))

    def chunk_all(states, params, n):
        return jax.lax.map(lambda sp: chunk_fn(sp[0], sp[1], n), (states, params))

    return jax.jit(init_all), jax.jit(chunk_all, static_argnums=2, donate_argnums=0)


def _mesh(devices: int | None):
    """The mesh of ``--devices N`` (None without the flag)."""
    if devices is None:
        return None
    from jaxdarts import sharding

    return sharding.make_mesh(devices)


def _shard(state, env_params, devices: int | None, env_cfg, mesh=None):
    """Splits the env batch over ``devices`` devices; agent and env params replicated.

    The programs are traced under the same mesh (:attr:`SearchRun.mesh`), so the
    discrete reward path's per-env loop is split over the devices too
    (:func:`jaxdarts.env.map_envs`).
    """
    if devices is None:
        return state, env_params
    from jaxdarts import sharding

    mesh = sharding.make_mesh(devices) if mesh is None else mesh
    state = sharding.shard_train_state(state, mesh, env_axis=1)  # [seeds, envs, ...]
    env_params = sharding.replicate(env_params, mesh)
    log.info("env batch split over %d device(s): %s", devices, mesh.devices.tolist())
    return state, env_params


# ----------------------------------------------------------------------- host loop
@dataclasses.dataclass
class SearchRun:
    """A search in progress: the pieces the host loop and the outputs share.

    Attributes:
      cfg: the validated config.
      setup: the built pieces (:func:`prepare`).
      run_dir: the run folder (:class:`jaxdarts.runs.RunDir`).
      total_updates: PPO updates of the whole search.
      done_updates: updates done so far (restored on resume).
      compile_s: seconds spent compiling chunks in this process (the first one's
        includes the final rollouts' program, compiled alongside it).
      tb: the TensorBoard logger, or None.
      mesh: the mesh of ``--devices`` (the programs are traced under it), or None.
      final_program: the final rollouts' program, compiled alongside the first
        chunk (:func:`final_rollout_program`), or None (compiled when needed).
    """

    cfg: dict[str, Any]
    setup: build.SearchSetup
    run_dir: Any
    total_updates: int
    done_updates: int = 0
    compile_s: float = 0.0
    tb: Any = None
    mesh: Any = None
    final_program: Any = None


def _records(run: SearchRun, metrics, n: int, run_s: float, compile_s: float):
    """One metrics record per update of a chunk (per-seed lists when seeds > 1)."""
    per_update = run.setup.steps_per_update
    seeds = run.setup.seeds
    for u in range(n):
        update = run.done_updates + u + 1
        rec: dict[str, Any] = {"update": update, "timesteps": update * per_update}
        for name, val in metrics.items():
            vals = np.asarray(val)[:, u]
            rec[name] = vals[0].item() if seeds == 1 else [x.item() for x in vals]
        rec["steps_per_s"] = per_update * seeds * n / max(run_s, 1e-9)
        rec["compile_s"] = compile_s if u == 0 else 0.0
        yield rec


def _warn_invalid(rec: dict[str, Any]) -> None:
    """A WARNING when most episode-end rewards of an update were invalid."""
    bad, eps = rec.get("invalid_rewards"), rec.get("num_episodes")
    if bad is None or eps is None:
        return
    bad = bad if isinstance(bad, list) else [bad]
    eps = eps if isinstance(eps, list) else [eps]
    for seed, (b, e) in enumerate(zip(bad, eps, strict=True)):
        if e > 0 and 2 * b > e:
            where = f" (seed {seed})" if len(bad) > 1 else ""
            log.warning(
                "update %d%s: %d of %d rewards were invalid (non-finite score, or "
                "a singular NWOT kernel: e.g. identical or constant images in the "
                "batch); those episodes got env.invalid_reward and the search "
                "learns nothing from them: check the data and the reward",
                rec["update"],
                where,
                int(b),
                int(e),
            )


def _run_chunk(run: SearchRun, programs: dict, chunk_jit, state, env_params, n: int):
    """One chunk of ``n`` updates: compiled ahead of time on first use (timed
    apart, with a "compiling" line; the first compile also waits for the final
    rollouts' program, compiled alongside), then run and timed."""
    from jaxdarts import sharding
    from jaxdarts.sharding import use_mesh

    compile_s = 0.0
    if n not in programs:
        log.info("compiling the search program (%d updates per call)...", n)
        t0 = time.perf_counter()
        # the mesh while tracing: the discrete reward splits its envs (env.map_envs)
        with use_mesh(run.mesh), _final_program_alongside(run, state, env_params):
            programs[n] = chunk_jit.lower(state, env_params, n).compile()
        compile_s = time.perf_counter() - t0
        # multi-host: line the processes up before the first collective (gloo gives
        # up after 30 s, and one process may have compiled from the cache)
        sharding.barrier("compiled")
        log.info("compiled in %.1fs", compile_s)
        run.compile_s += compile_s
    t0 = time.perf_counter()
    state, metrics = programs[n](state, env_params)
    metrics = sharding.fetch(metrics)  # multi-host: gathered
    run_s = time.perf_counter() - t0
    for rec in _records(run, metrics, n, run_s, compile_s):
        _warn_invalid(rec)
        run.run_dir.append_metrics(rec)
        if run.tb is not None:
            run.tb.log(rec, rec["timesteps"])
    return state, metrics


def train_loop(run: SearchRun, chunk_jit, state, env_params, ckpt) -> tuple[Any, bool]:
    """Runs chunks until the search is done or Ctrl-C; saves checkpoints.

    Returns:
      ``(state, interrupted)``.
    """
    from jaxdarts import runs

    every = run.cfg["run"]["checkpoint_every"]
    chunk = run.cfg["run"]["updates_per_chunk"]
    bar = runs.progress(
        run.total_updates, "search", initial=run.done_updates, unit="upd"
    )
    programs: dict[int, Any] = {}
    interrupted, n_chunks = False, 0
    with bar, runs.GracefulInterrupt() as stop:
        while run.done_updates < run.total_updates:
            n = min(chunk, run.total_updates - run.done_updates)
            state, metrics = _run_chunk(run, programs, chunk_jit, state, env_params, n)
            run.done_updates += n
            n_chunks += 1
            bar.update(n)
            last = np.asarray(metrics["reward_mean"])[:, -1]
            if np.isfinite(last).any():  # NaN: no episode ended in the update
                bar.set_postfix(reward=f"{np.nanmean(last):.4g}")
            finished = run.done_updates >= run.total_updates
            if n_chunks % every == 0 or finished or stop.requested:
                ckpt.save(run.done_updates, state)
            if stop.requested and not finished:
                interrupted = True
                break
    ckpt.wait()
    return state, interrupted


# ----------------------------------------------------------------------- outputs
def _genotype_of(alphas, space_name: str):
    from jaxdarts.genotypes import derive_genotype

    return derive_genotype(np.asarray(alphas[0]), np.asarray(alphas[1]), space_name)


def _edge_ops(space, alphas) -> dict[str, list[str]]:
    """``{"normal_ops", "reduce_ops"}``: each edge's argmax op of ``alphas``."""
    out = {}
    for cell, ops, a in (
        ("normal", space.normal, alphas[0]),
        ("reduce", space.reduce, alphas[1]),
    ):
        out[f"{cell}_ops"] = [ops[e][int(i)] for e, i in enumerate(a.argmax(-1))]
    return out


def final_env_state(state, seed: int):
    """Env 0 of seed ``seed`` at the end of a search (``[1, ...]`` leaves): the final
    rollouts start from it, so the ``cont-*-step`` variants score on the supernet
    weights that drifted during the run (the weight step), not the initial ones."""
    import jax

    return jax.tree.map(lambda x: x[seed, :1], state.env_state)


def _final_rollout(run: SearchRun):
    """``(jitted evaluate_policy, its one-env env)``: the final rollouts' program
    (``env`` and ``num_steps`` static; ``deterministic`` traced, so that both
    rollouts share one compiled program)."""
    import jax

    from jaxdarts import env as env_lib
    from jaxdarts.ppo import evaluate_policy

    rollout = jax.jit(evaluate_policy, static_argnums=(1, 4))
    return rollout, env_lib.LockstepEnv(run.setup.env, 1)


def _final_args(run: SearchRun, state, env_params, seed: int, deterministic: bool):
    """The traced arguments of seed ``seed``'s final rollout: ``(params, env_params,
    key, deterministic, env_state)``."""
    import jax
    import jax.numpy as jnp

    return (
        jax.tree.map(lambda x: x[seed], state.params),
        jax.tree.map(lambda x: x[seed], env_params),
        jax.random.key(run.cfg["seed"] + 1000 + seed),
        jnp.asarray(deterministic),
        final_env_state(state, seed),
    )


def final_rollout_program(run: SearchRun, state, env_params):
    """Compiles the final rollouts' program ahead of time.

    Args:
      run: the search.
      state: the search state (``[seeds, ...]`` leaves), arrays or their shapes
        (``jax.ShapeDtypeStruct``); only the shapes are used.
      env_params: the env parameters (``[seeds, ...]``), likewise.

    Returns:
      The compiled program, which :func:`final_architectures` runs when it is
      ``run.final_program``.
    """
    import jax

    rollout, one_env = _final_rollout(run)
    params, env_params_s, key, det, env_state = jax.eval_shape(
        lambda st, ep: _final_args(run, st, ep, 0, True), state, env_params
    )
    n = run.setup.env.episode_length
    lowered = rollout.lower(params, one_env, env_params_s, key, n, det, env_state)
    return lowered.compile()


@contextlib.contextmanager
def _final_program_alongside(run: SearchRun, state, env_params):
    """Compiles the final rollouts' program on a second thread while the body runs
    (the first chunk's compile), into ``run.final_program``.

    XLA compiles a program mostly on one core, so the two compiles overlap instead
    of following each other: the final rollouts hold the reward too, which is most
    of a compile (a paper-size disc search: about a minute each on 2 CPU cores).
    Only in a single process without ``--devices`` (elsewhere the program is
    compiled when the rollouts start, as it is when this compile fails: its error
    then comes up there).
    """
    import threading

    import jax

    from jaxdarts import sharding

    if (
        run.final_program is not None
        or run.mesh is not None
        or sharding.process_count() > 1
    ):
        yield
        return
    # shapes only, taken now: the chunk donates the state
    shapes = jax.eval_shape(lambda *a: a, state, env_params)
    result: dict[str, Any] = {}

    def compile_final():
        try:
            result["program"] = final_rollout_program(run, *shapes)
        except Exception as e:  # noqa: BLE001 - compiled again (and raised) when needed
            log.debug("compiling the final rollouts alongside failed: %r", e)

    thread = threading.Thread(target=compile_final, name="jaxdarts-final-compile")
    thread.start()
    try:
        yield
    finally:
        # never leave it compiling: a thread inside XLA at exit aborts the process
        thread.join()
    run.final_program = result.get("program")


def final_architectures(run: SearchRun, state, env_params) -> list[dict[str, Any]]:
    """Per seed: the deterministic and stochastic policies' architectures and
    rewards (one episode each, continuing env 0 of the seed: its drifted weights
    with the weight step) and the top-k seen during the search.

    Uses ``run.final_program`` if the first chunk's compile made it, else compiles.
    """
    from jaxdarts.genotypes import to_json_dict

    env_cfg = run.setup.env
    space = env_cfg.supernet.space
    rollout, one_env = _final_rollout(run)
    out = []
    for s in range(run.setup.seeds):
        res = {}
        for det in (True, False):
            params, env_params_s, key, d, env_state = _final_args(
                run, state, env_params, s, det
            )
            if run.final_program is not None:
                roll = run.final_program(params, env_params_s, key, d, env_state)
            else:
                roll = rollout(
                    params,
                    one_env,
                    env_params_s,
                    key,
                    env_cfg.episode_length,
                    d,
                    env_state,
                )
            alphas = np.asarray(roll.info["final_alphas"][-1, 0])
            name = "deterministic" if det else "stochastic"
            res[name] = (
                _genotype_of(alphas, env_cfg.net.space),
                float(roll.info["raw_reward"][-1, 0]),
            )
        top_r = np.asarray(state.track["rewards"][s])
        top_a = np.asarray(state.track["alphas"][s])
        res["top"] = [
            {
                "reward": float(r),
                "genotype": to_json_dict(_genotype_of(a, env_cfg.net.space)),
                **_edge_ops(space, a),
            }
            for r, a in zip(top_r, top_a, strict=True)
            if np.isfinite(r)
        ]
        if run.cfg.get("agent") == "random":
            _best_seen_as_final(res)
        out.append(res)
    return out


def _best_seen_as_final(res: dict[str, Any]) -> None:
    """Random search: its final (``deterministic``) architecture is the best one
    seen (the untrained policy's argmax means nothing); ``stochastic`` stays a
    sample of the untrained policy."""
    from jaxdarts.genotypes import from_json_dict

    if res["top"]:
        best = res["top"][0]
        res["deterministic"] = (from_json_dict(best["genotype"]), best["reward"])


def _reward_trend(metrics: list[dict[str, Any]], seed: int) -> tuple[Any, Any]:
    """The first and last finite ``reward_mean`` of a seed (None if none)."""
    vals = []
    for m in metrics:
        v = m.get("reward_mean")
        v = v[seed] if isinstance(v, list) else v
        if v is not None and math.isfinite(v):
            vals.append(v)
    return (vals[0], vals[-1]) if vals else (None, None)


def write_outputs(run: SearchRun, results: list[dict[str, Any]], wall_s: float):
    """Writes the genotypes, top-k, pictures, ``curves.png`` and ``summary.json``.

    Returns:
      The summary (what ``summary.json`` holds).
    """
    from jaxdarts.genotypes import save_genotype_json, to_darts_string, to_json_dict
    from jaxdarts.plotting import plot_genotype, plot_search_curves

    path, cfg, space = run.run_dir.path, run.cfg, run.setup.env.net.space
    metrics = run.run_dir.read_metrics()
    summary: dict[str, Any] = {"variant": cfg["variant"], "space": space, "seeds": []}
    for s, res in enumerate(results):
        suffix = "" if len(results) == 1 else f"-seed{s}"
        (g_det, r_det), (g_sto, r_sto) = res["deterministic"], res["stochastic"]
        stochastic = {
            "genotype": to_json_dict(g_sto),
            "darts": to_darts_string(g_sto),
            "reward": r_sto,
        }
        save_genotype_json(
            path / f"genotype{suffix}.json",
            g_det,
            space,
            reward=r_det,
            seed=cfg["seed"] + s,
            policy="best_seen" if cfg.get("agent") == "random" else "deterministic",
            stochastic=stochastic,
        )
        (path / f"genotype{suffix}.txt").write_text(to_darts_string(g_det) + "\n")
        run.run_dir.write_json(f"top_architectures{suffix}.json", res["top"])
        title = f"{cfg['variant']} (%s policy)"
        plot_genotype(g_det, path / f"cells{suffix}", title=title % "deterministic")
        plot_genotype(
            g_sto, path / f"cells-stochastic{suffix}", title=title % "stochastic"
        )
        start, end = _reward_trend(metrics, s)
        summary["seeds"].append(
            {
                "genotype": to_darts_string(g_det),
                "reward": r_det,
                "stochastic_reward": r_sto,
                "best_seen": res["top"][0]["reward"] if res["top"] else None,
                "reward_mean_start": start,
                "reward_mean_end": end,
            }
        )
    plot_search_curves(metrics, path / "curves.png")
    per_update = run.setup.steps_per_update
    summary.update(
        updates=run.done_updates,
        timesteps=run.done_updates * per_update,
        wall_s=wall_s,
        compile_s=run.compile_s,
        outputs=str(path),
    )
    run.run_dir.write_json("summary.json", summary)
    return summary


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def summary_items(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """The lines of the end-of-search summary (for :func:`jaxdarts.runs.print_summary`)."""
    from jaxdarts.runs import format_duration

    items: list[tuple[str, Any]] = []
    many = len(summary["seeds"]) > 1
    for s, seed in enumerate(summary["seeds"]):
        tag = f" (seed {s})" if many else ""
        items += [
            (f"genotype{tag}", seed["genotype"]),
            (
                f"its reward{tag}",
                f"{_num(seed['reward'])} (best seen {_num(seed['best_seen'])})",
            ),
            (
                f"mean reward{tag}",
                f"{_num(seed['reward_mean_start'])} at the start -> {_num(seed['reward_mean_end'])} at the end",
            ),
        ]
    items += [
        ("env steps", f"{summary['timesteps']:,} ({summary['updates']} PPO updates)"),
        (
            "wall time",
            f"{format_duration(summary['wall_s'])} (compiling {format_duration(summary['compile_s'])})",
        ),
        ("outputs", f"{summary['outputs']} ({OUTPUTS})"),
    ]
    return items


# ----------------------------------------------------------------------- run
def _initial_state(run: SearchRun, ckpt, resume: bool):
    """The agents and envs of every seed, fresh or restored from the newest
    checkpoint (whose later metrics are dropped); returns ``(state, chunk_jit)``."""
    import jax
    import jax.numpy as jnp

    cfg, setup = run.cfg, run.setup
    log.info("initialising the agents and envs (compiling the init)...")
    init_jit, chunk_jit = make_programs(
        setup, cfg["run"]["top_k"], cfg.get("agent", "ppo")
    )
    keys = jnp.stack([jax.random.key(cfg["seed"] + i) for i in range(setup.seeds)])
    from jaxdarts.sharding import use_mesh

    with use_mesh(run.mesh):
        state = init_jit(keys, setup.env_params)
    if resume:
        state = _restore(run, ckpt, state)
    return state, chunk_jit


def _restore(run: SearchRun, ckpt, state):
    """The newest checkpoint that restores (damaged ones skipped with a WARNING);
    the metrics after it are dropped, so no update is ever logged twice."""
    from jaxdarts.checkpoint import restore_newest_valid

    found = restore_newest_valid(ckpt, state, warn=log.warning)
    if found is None:
        raise FileNotFoundError(_no_checkpoint(run.run_dir.path))
    step, state = found
    run.done_updates = step
    run.run_dir.truncate_metrics(step, key="update")
    log.info("resumed from update %d", step)
    return state


def _no_checkpoint(path) -> str:
    return (
        f"--resume {path}: the run has no checkpoint to continue from; start it "
        f"again with --out {path} --overwrite"
    )


def _open_run(cfg, out, resume: bool, overwrite: bool):
    from jaxdarts.configs.search import RESUME_MAY_CHANGE
    from jaxdarts.runs import DEFAULT_RESUME_IGNORE, RunDir

    if resume:
        ignore = DEFAULT_RESUME_IGNORE + RESUME_MAY_CHANGE
        run_dir = RunDir.resume(out, cfg, ignore=ignore)
        if run_dir.config != cfg:  # a key that may change did (e.g. more steps)
            run_dir.write_json("config.json", cfg)
            run_dir.config = cfg
        return run_dir
    return RunDir.create(out or default_out(cfg), cfg, overwrite=overwrite)


def run(
    cfg: dict[str, Any],
    out: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    devices: int | None = None,
    tensorboard: bool = False,
    setup: build.SearchSetup | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) a search into the run folder ``out``; returns the summary.

    Args:
      cfg: the validated config (:func:`jaxdarts.config.load` of ``"search"``).
      out: the run folder (default ``runs/<variant>-<time>``; with ``resume``, the
        folder to continue).
      resume: continue ``out`` from its newest checkpoint (bit-exact).
      overwrite: replace an existing run folder at ``out``.
      devices: split the lockstep envs over the first ``devices`` devices
        (:mod:`jaxdarts.sharding`; not part of the config).
      tensorboard: also log the metrics under ``<run>/tb`` (tensorboardX).
      setup: the result of :func:`prepare` (None: built here).

    Returns:
      The summary, or ``{"interrupted": True, "update": n}`` after Ctrl-C.
    """
    from jaxdarts import runs

    if setup is None:
        if resume:
            check_resume(cfg, out)
        setup = prepare(cfg, devices, tensorboard)
    run_dir = _open_run(cfg, out, resume, overwrite)
    runs.setup_logging(run_dir.path)
    runs.enable_compilation_cache()
    total = max(1, math.ceil(cfg["run"]["total_steps"] / setup.steps_per_update))
    srun = SearchRun(cfg, setup, run_dir, total, mesh=_mesh(devices))
    if tensorboard:
        srun.tb = runs.TensorBoardLogger(run_dir.path / "tb")
    log.info(
        "run folder %s | variant %s | %d seed(s) x %d env(s) | %d updates of %d steps",
        run_dir.path,
        cfg["variant"],
        setup.seeds,
        setup.num_envs,
        total,
        setup.steps_per_update,
    )
    t0 = time.time()
    ckpt = run_dir.checkpointer()
    state, chunk_jit = _initial_state(srun, ckpt, resume)
    state, env_params = _shard(state, setup.env_params, devices, setup.env, srun.mesh)
    try:
        state, interrupted = train_loop(srun, chunk_jit, state, env_params, ckpt)
        if interrupted:
            plot_done = _plot_partial(srun) if run_dir.writer else ""
            log.info(
                "interrupted: checkpoint saved at update %d%s; continue with "
                "--resume %s",
                srun.done_updates,
                plot_done,
                run_dir.path,
            )
            return {"interrupted": True, "update": srun.done_updates}
        if srun.final_program is None:
            log.info("compiling and playing the final policy rollouts...")
        else:
            log.info("playing the final policy rollouts...")
        results = final_architectures(srun, state, env_params)
        if not run_dir.writer:  # multi-host: process 0 writes the outputs
            return _non_writer_summary(srun, results)
        summary = write_outputs(srun, results, time.time() - t0)
    finally:
        ckpt.close()
        if srun.tb is not None:
            srun.tb.close()
    runs.print_summary(
        f"search finished in {runs.format_duration(summary['wall_s'])}",
        summary_items(summary),
    )
    return summary


def _plot_partial(run: SearchRun) -> str:
    """``curves.png`` of the updates so far (an interrupted run)."""
    from jaxdarts.plotting import plot_search_curves

    plot_search_curves(run.run_dir.read_metrics(), run.run_dir.path / "curves.png")
    return " (curves.png so far)"


def _non_writer_summary(run: SearchRun, results: list[dict[str, Any]]):
    """What a process other than the writer returns (it writes no outputs)."""
    from jaxdarts.genotypes import to_darts_string

    seeds = [{"genotype": to_darts_string(r["deterministic"][0])} for r in results]
    return {"seeds": seeds, "updates": run.done_updates, "outputs": None}
