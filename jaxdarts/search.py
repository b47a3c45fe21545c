"""``python -m jaxdarts.search``: the paper's PPO architecture search, end to end.

A run is ``config -> run folder``: the host loop calls one jitted chunk of PPO updates
(rollout of the lockstep envs, GAE, minibatch epochs), then logs metrics, draws the
progress bar and saves Orbax checkpoints. ``--seeds N`` runs N independent searches in
one compiled program (``lax.map`` over seeds, so that the episode-end reward stays a
real ``cond``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Any

import numpy as np

__all__ = ["make_config", "resolve", "run", "main", "VARIANTS", "PRESETS"]

from jaxdarts.configs import base as _base
from jaxdarts.configs.variants import PRESETS, VARIANTS

log = logging.getLogger("jaxdarts")


# ----------------------------------------------------------------------------- config
def _merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_override(config: dict, dotted: str, value) -> None:
    """Sets ``a.b.c = value``; unknown keys are refused listing the valid ones."""
    node = config
    parts = dotted.split(".")
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            where = ".".join(parts[:i]) or "<top>"
            valid = sorted(node) if isinstance(node, dict) else []
            raise ValueError(f"unknown config key {dotted!r}: {where} has {valid}")
        if i == len(parts) - 1:
            node[p] = value
        else:
            node = node[p]


def make_config(variant: str = "disc-nwot", preset: str = "paper", **sets) -> dict:
    """Base config + variant + preset (+ dotted overrides, e.g. ``{"env.num_envs": 4}``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    cfg = _base.get_config()
    over = {k: v for k, v in VARIANTS[variant].items() if k != "needs_checkpoint"}
    _merge(cfg, over)
    _merge(cfg, PRESETS[preset])
    cfg["variant"], cfg["preset"] = variant, preset
    for k, v in sets.items():
        set_override(cfg, k, v)
    return cfg


def resolve(cfg: dict):
    """Validates a config and builds the static objects. Raises ValueError early."""
    from jaxdarts.env import EnvConfig
    from jaxdarts.ppo import PPOConfig
    from jaxdarts.rewards import RewardConfig
    from jaxdarts.supernet import SupernetConfig

    e, s, p, r = cfg["env"], cfg["supernet"], cfg["ppo"], cfg["run"]
    if cfg.get("compat") not in (None, "dartsrl"):
        raise ValueError(f"compat must be null or 'dartsrl', got {cfg['compat']!r}")
    dartsrl = cfg.get("compat") == "dartsrl"
    if VARIANTS[cfg["variant"]].get("needs_checkpoint") and not s["checkpoint"]:
        raise ValueError(
            f"variant {cfg['variant']!r} needs a pre-trained supernet: pass "
            "--supernet-ckpt DIR (make one with `python -m jaxdarts.pretrain`)"
        )
    if e["nwot_flavour"] not in ("reference", "original"):
        raise ValueError("env.nwot_flavour must be 'reference' or 'original'")
    for name in ("num_envs", "batch_size"):
        if int(e[name]) < 1:
            raise ValueError(f"env.{name} must be >= 1")
    if int(cfg["seeds"]) < 1:
        raise ValueError("--seeds must be >= 1")
    if int(r["total_steps"]) < 1 or int(r["updates_per_chunk"]) < 1:
        raise ValueError("run.total_steps and run.updates_per_chunk must be >= 1")
    net = SupernetConfig(
        space=s["space"],
        channels=int(s["channels"]),
        layers=int(s["layers"]),
        num_classes=10,
        impl=s["impl"],
        swap_cells=dartsrl,
    )
    reward = RewardConfig(
        kind=e["reward"],
        path=e["reward_path"],
        bn_train=e["nwot_flavour"] == "original",
        invalid_reward=float(e["invalid_reward"]),
    )
    env_cfg = EnvConfig(
        kind=e["kind"],
        net=net,
        reward=reward,
        batch_size=int(e["batch_size"]),
        sentinel=float(e["sentinel"]),
        alpha_std=float(e["alpha_std"]),
        lam=float(e["lam"]),
        sweeps=int(e["sweeps"]),
        frame_stack=int(e["frame_stack"]),
        grad_obs=bool(e["grad_obs"]),
        weight_step=bool(e["weight_step"]),
        weight_step_period=1 if dartsrl else int(e["weight_step_period"]),
        augment_valid=bool(e["augment_valid"]),
        reward_norm=bool(e["reward_norm"]),
    )
    num_envs = int(e["num_envs"])
    n_steps = math.ceil(int(p["transitions_per_update"]) / num_envs)
    ppo = PPOConfig(
        learning_rate=float(p["learning_rate"]),
        n_steps=n_steps,
        batch_size=int(p["batch_size"]),
        n_epochs=int(p["n_epochs"]),
        gamma=float(p["gamma"]),
        gae_lambda=float(p["gae_lambda"]),
        clip_range=float(p["clip_range"]),
        ent_coef=float(p["ent_coef"]),
        vf_coef=float(p["vf_coef"]),
        max_grad_norm=float(p["max_grad_norm"]),
    )
    return env_cfg, ppo, num_envs


# ----------------------------------------------------------------------------- pieces
def _top_k_track(k: int):
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


def _prepare(cfg: dict, env_cfg):
    """Data, env params per seed (stacked). Returns (env_params, dataset meta)."""
    import jax
    import jax.numpy as jnp

    from jaxdarts import data as data_lib
    from jaxdarts import env as env_lib

    ds = data_lib.load_dataset(cfg["data"]["dataset"], cfg["data"]["data_dir"])
    if ds.num_classes != env_cfg.net.num_classes:
        env_cfg = dataclasses.replace(
            env_cfg, net=dataclasses.replace(env_cfg.net, num_classes=ds.num_classes)
        )
    crop = data_lib.default_crop_pad(ds.image_shape[0])
    env_cfg = dataclasses.replace(env_cfg, crop_pad=crop)
    tr, va = data_lib.split_indices(len(ds.train_images), int(cfg["seed"]))
    net = env_cfg.supernet
    ckpt = cfg["supernet"]["checkpoint"]
    seeds = int(cfg["seeds"])
    if ckpt:
        from jaxdarts.pretrain import load_supernet

        variables, _ = load_supernet(
            ckpt,
            expect={
                "space": env_cfg.net.space,
                "channels": env_cfg.net.channels,
                "layers": env_cfg.net.layers,
                "num_classes": env_cfg.net.num_classes,
                "image_shape": list(ds.image_shape),
            },
        )
        per_seed = [variables] * seeds
    else:
        per_seed = [
            net.init(
                jax.random.fold_in(jax.random.key(int(cfg["seed"]) + i), 7),
                ds.image_shape,
            )
            for i in range(seeds)
        ]
    params = [
        env_lib.make_params(
            env_cfg,
            v,
            ds.train_images[va],
            ds.train_labels[va],
            ds.mean,
            ds.std,
            ds.train_images[tr] if env_cfg.weight_step else None,
            ds.train_labels[tr] if env_cfg.weight_step else None,
        )
        for v in per_seed
    ]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
    return stacked, env_cfg, ds


def _genotype_of(alphas, env_cfg):
    from jaxdarts.genotypes import derive_genotype

    return derive_genotype(
        np.asarray(alphas[0]), np.asarray(alphas[1]), env_cfg.net.space
    )


# ----------------------------------------------------------------------------- run
def run(
    cfg: dict,
    out: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    devices: int | None = None,
) -> dict:
    """Runs (or resumes) a search into the run folder ``out``; returns the summary.

    ``devices``: split the lockstep envs over the first ``devices`` devices
    (:mod:`jaxdarts.sharding`; not part of the config, the results agree to float
    rounding).
    """
    env_cfg, ppo_cfg, num_envs = resolve(cfg)  # errors before anything expensive
    _check_devices(devices, num_envs)
    from jaxdarts.runs import (
        GracefulInterrupt,
        RunDir,
        enable_compilation_cache,
        progress,
        setup_logging,
    )

    if out is None:
        out = os.path.join("runs", f"{cfg['variant']}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir = (
        RunDir.resume(out, cfg)
        if resume
        else RunDir.create(out, cfg, overwrite=overwrite)
    )
    setup_logging(run_dir.path)
    enable_compilation_cache()

    import jax
    import jax.numpy as jnp

    from jaxdarts import env as env_lib
    from jaxdarts import sharding as sharding_lib
    from jaxdarts.genotypes import save_genotype_json, to_darts_string, to_json_dict
    from jaxdarts.plotting import plot_genotype
    from jaxdarts.ppo import evaluate_policy, make_train

    env_params, env_cfg, ds = _prepare(cfg, env_cfg)
    venv = env_lib.LockstepEnv(env_cfg, num_envs)
    seeds = int(cfg["seeds"])
    k = int(cfg["run"]["top_k"])
    init_fn, chunk_fn = make_train(ppo_cfg, venv, _top_k_track(k))
    per_update = ppo_cfg.n_steps * num_envs
    total_updates = max(1, math.ceil(int(cfg["run"]["total_steps"]) / per_update))
    chunk = int(cfg["run"]["updates_per_chunk"])
    kdim = env_cfg.num_ops
    track0 = {
        "rewards": jnp.full((k,), -jnp.inf, jnp.float32),
        "alphas": jnp.zeros((k, 2, 14, kdim), jnp.float32),
    }

    def init_all(keys, params):
        return jax.lax.map(lambda kp: init_fn(kp[0], kp[1], track0), (keys, params))

    def chunk_all(states, params, n):
        return jax.lax.map(lambda sp: chunk_fn(sp[0], sp[1], n), (states, params))

    keys = jnp.stack([jax.random.key(int(cfg["seed"]) + i) for i in range(seeds)])
    init_jit = jax.jit(init_all)
    chunk_jit = jax.jit(chunk_all, static_argnums=2, donate_argnums=0)
    ckpt = run_dir.checkpointer()
    log.info(
        "run folder %s | variant %s | %d seed(s) x %d env(s) | %d updates of %d steps",
        run_dir.path,
        cfg["variant"],
        seeds,
        num_envs,
        total_updates,
        per_update,
    )
    t0 = time.time()
    state = init_jit(keys, env_params)
    done_updates = 0
    if resume:
        step = ckpt.latest_step()
        if step is not None:
            state = ckpt.restore(step, state)
            done_updates = step
            run_dir.truncate_metrics(step, key="update")
            log.info("resumed from update %d", step)
    state, env_params = _shard(state, env_params, devices, env_cfg)
    bar = progress(total_updates, "search", initial=done_updates, unit="upd")
    interrupted = False
    n_chunks = 0
    with GracefulInterrupt() as stop:
        while done_updates < total_updates:
            n = min(chunk, total_updates - done_updates)
            tc = time.time()
            state, metrics = chunk_jit(state, env_params, n)
            metrics = sharding_lib.fetch(metrics)  # multi-host: gathered
            dt = time.time() - tc
            for u in range(n):
                rec = {
                    "update": done_updates + u + 1,
                    "timesteps": (done_updates + u + 1) * per_update,
                }
                for name, val in metrics.items():
                    vals = np.asarray(val)[:, u]
                    rec[name] = (
                        float(vals[0]) if seeds == 1 else [float(x) for x in vals]
                    )
                rec["steps_per_s"] = per_update * seeds * n / dt
                run_dir.append_metrics(rec)
            done_updates += n
            n_chunks += 1
            bar.update(n)
            m = np.asarray(metrics["reward_mean"])[:, -1]
            bar.set_postfix(reward=f"{np.nanmean(m):.4g}")
            if (
                n_chunks % int(cfg["run"]["checkpoint_every"]) == 0
                or done_updates >= total_updates
            ):
                ckpt.save(done_updates, state)
            if stop.requested:
                ckpt.save(done_updates, state)
                interrupted = True
                break
    bar.close()
    ckpt.wait()
    if interrupted:
        log.info(
            "interrupted: checkpoint saved at update %d; continue with --resume %s",
            done_updates,
            run_dir.path,
        )
        ckpt.close()
        return {"interrupted": True, "update": done_updates}

    # Final architectures: deterministic and stochastic rollouts of the policy.
    ep = env_cfg.episode_length
    summary: dict[str, Any] = {
        "variant": cfg["variant"],
        "space": env_cfg.net.space,
        "seeds": [],
    }
    # `deterministic` is traced, so both rollouts share one compiled program.
    final_rollout = jax.jit(evaluate_policy, static_argnums=(1, 4))
    for s in range(seeds):
        params_s = jax.tree.map(lambda x, s=s: x[s], state.params)
        env_params_s = jax.tree.map(lambda x, s=s: x[s], env_params)
        res = {}
        for det in (True, False):
            roll = final_rollout(
                params_s,
                env_lib.LockstepEnv(env_cfg, 1),
                env_params_s,
                jax.random.key(int(cfg["seed"]) + 1000 + s),
                ep,
                jnp.asarray(det),
            )
            alphas = np.asarray(roll.info["final_alphas"][-1, 0])
            res["deterministic" if det else "stochastic"] = (
                _genotype_of(alphas, env_cfg),
                float(roll.info["raw_reward"][-1, 0]),
            )
        suffix = "" if seeds == 1 else f"-seed{s}"
        g_det, r_det = res["deterministic"]
        g_sto, r_sto = res["stochastic"]
        top_r = np.asarray(state.track["rewards"][s])
        top_a = np.asarray(state.track["alphas"][s])
        top = [
            {
                "reward": float(r),
                "genotype": to_json_dict(_genotype_of(a, env_cfg)),
                "normal_ops": [
                    env_cfg.supernet.space.normal[e][int(i)]
                    for e, i in enumerate(a[0].argmax(-1))
                ],
                "reduce_ops": [
                    env_cfg.supernet.space.reduce[e][int(i)]
                    for e, i in enumerate(a[1].argmax(-1))
                ],
            }
            for r, a in zip(top_r, top_a, strict=True)
            if np.isfinite(r)
        ]
        if not run_dir.writer:  # multi-host: process 0 writes the outputs
            summary["seeds"].append({"genotype": to_darts_string(g_det)})
            continue
        save_genotype_json(
            run_dir.path / f"genotype{suffix}.json",
            g_det,
            env_cfg.net.space,
            reward=r_det,
            seed=int(cfg["seed"]) + s,
            policy="deterministic",
            stochastic={
                "genotype": to_json_dict(g_sto),
                "darts": to_darts_string(g_sto),
                "reward": r_sto,
            },
        )
        (run_dir.path / f"genotype{suffix}.txt").write_text(
            to_darts_string(g_det) + "\n"
        )
        run_dir.write_json(f"top_architectures{suffix}.json", top)
        plot_genotype(
            g_det,
            run_dir.path / f"cells{suffix}",
            title=f"{cfg['variant']} (deterministic policy)",
        )
        plot_genotype(
            g_sto,
            run_dir.path / f"cells-stochastic{suffix}",
            title=f"{cfg['variant']} (stochastic policy)",
        )
        summary["seeds"].append(
            {
                "genotype": to_darts_string(g_det),
                "reward": r_det,
                "stochastic_reward": r_sto,
                "best_seen": top[0]["reward"] if top else None,
            }
        )
    summary["updates"] = done_updates
    summary["timesteps"] = done_updates * per_update
    summary["wall_s"] = time.time() - t0
    run_dir.write_json("summary.json", summary)
    ckpt.close()
    log.info(
        "done: %d steps in %.0fs; genotype -> %s",
        summary["timesteps"],
        summary["wall_s"],
        run_dir.path / "genotype.json",
    )
    if run_dir.writer:  # multi-host: one message, from process 0
        print(
            f"search finished: outputs in {run_dir.path} "
            f"(genotype.json, cells.png, metrics.jsonl, top_architectures.json)"
        )
    return summary


# ------------------------------------------------------------------- --devices N
def _check_devices(devices: int | None, num_envs: int) -> None:
    if devices is None:
        return
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    if num_envs % devices:
        raise ValueError(
            f"--devices {devices} must divide the number of envs ({num_envs}): "
            "choose --num-envs as a multiple of it"
        )


def _shard(state, env_params, devices: int | None, env_cfg):
    """Splits the env batch over ``devices`` devices; agent and env params replicated."""
    if devices is None:
        return state, env_params
    from jaxdarts import sharding

    mesh = sharding.make_mesh(devices)
    state = sharding.shard_train_state(state, mesh, env_axis=1)  # [seeds, envs, ...]
    env_params = sharding.replicate(env_params, mesh)
    log.info("env batch split over %d device(s): %s", devices, mesh.devices.tolist())
    if devices > 1 and env_cfg.kind == "discrete" and env_cfg.reward.path == "discrete":
        log.warning(
            "reward_path=discrete scores the envs one by one (lax.map), which every "
            "device then runs for all envs: use --set env.reward_path=dense to split "
            "the rewards over the devices"
        )
    return state, env_params


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxdarts.search",
        description="PPO search over DARTS cells (Shah, 'Exploring the Landscape of "
        "DARTS with RL').",
    )
    p.add_argument("--variant", default="disc-nwot", choices=list(VARIANTS))
    p.add_argument("--preset", default="paper", choices=list(PRESETS))
    p.add_argument("--space", help="darts, s1, s2, s3, s4, nas-bench-201")
    p.add_argument("--dataset", help="digits (embedded), cifar10, or a TFDS name")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--seed", type=int)
    p.add_argument("--seeds", type=int, help="independent searches in one program")
    p.add_argument("--num-envs", type=int)
    p.add_argument("--total-steps", type=int)
    p.add_argument("--supernet-ckpt", help="pre-trained supernet (jaxdarts.pretrain)")
    p.add_argument("--compat", choices=["dartsrl"])
    p.add_argument("--out", help="run folder (default runs/<variant>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="split the lockstep envs over the first N devices (jax.sharding; "
        "--num-envs must be a multiple of N)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value, e.g. --set env.batch_size=32",
    )
    p.add_argument("--print-config", action="store_true")
    return p


def config_from_args(args) -> dict:
    if args.resume:
        path = os.path.join(args.resume, "config.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"--resume {args.resume}: no config.json there")
        with open(path) as f:
            return json.load(f)
    cfg = make_config(args.variant, args.preset)
    flat = {
        "supernet.space": args.space,
        "data.dataset": args.dataset,
        "data.data_dir": args.data_dir,
        "seed": args.seed,
        "seeds": args.seeds,
        "env.num_envs": args.num_envs,
        "run.total_steps": args.total_steps,
        "supernet.checkpoint": args.supernet_ckpt,
        "compat": args.compat,
    }
    for k, v in flat.items():
        if v is not None:
            set_override(cfg, k, v)
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        set_override(cfg, key.strip(), _parse_value(val))
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from jaxdarts.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host runs: see README "Scaling out"
    try:
        cfg = config_from_args(args)
        if args.resume and (args.out or args.overwrite):
            raise ValueError("--resume DIR continues DIR: drop --out/--overwrite")
        _check_devices(args.devices, resolve(cfg)[2])
        if cfg["supernet"]["checkpoint"] and not os.path.isdir(
            cfg["supernet"]["checkpoint"]
        ):
            raise FileNotFoundError(
                f"--supernet-ckpt {cfg['supernet']['checkpoint']}: no such folder"
            )
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0
    try:
        run(
            cfg,
            out=args.resume or args.out,
            resume=bool(args.resume),
            overwrite=args.overwrite,
            devices=args.devices,
        )
    except Exception as e:  # errors found after start-up, e.g. a run folder that exists
        from jaxdarts.runs import ConfigMismatchError, RunExistsError

        if isinstance(e, (RunExistsError, ConfigMismatchError, FileNotFoundError)):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
