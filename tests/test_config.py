"""The config engine (jaxdarts.config) and the shared CLI pieces (jaxdarts.cli)."""

import argparse
import json

import pytest
from jaxdarts.configs import search as search_configs

from jaxdarts import cli
from jaxdarts import config as C

COMMANDS_HERE = ("search", "score")


@pytest.mark.parametrize("command", COMMANDS_HERE)
@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_every_preset_is_valid_and_fully_described(command, preset):
    cfg = C.load(command, preset=preset)
    assert cfg["preset"] == preset
    schema = C.config_module(command).SCHEMA
    flat = C.flatten(cfg, schema)
    assert set(flat) == set(schema)  # every key has a rule and an explanation
    text = C.describe(command, cfg)
    for key in schema:
        assert f"\n{key} " in text or text.startswith(key)
    assert all(schema[k].help for k in schema)


def test_quick_size_is_shared():
    from jaxdarts.configs.common import QUICK_SUPERNET

    for command in COMMANDS_HERE:
        s = C.load(command, preset="quick")["supernet"]
        assert {k: s[k] for k in QUICK_SUPERNET} == QUICK_SUPERNET
    assert QUICK_SUPERNET["layers"] == 3


def test_order_variant_then_preset_then_overrides_then_sets():
    cfg = C.load(
        "search",
        preset="quick",
        variant="cont-acc-step",
        overrides={"run.total_steps": 100, "seed": None},
        sets=["run.total_steps=7", "supernet.checkpoint=/x"],
    )
    assert cfg["variant"] == "cont-acc-step" and cfg["env"]["kind"] == "continuous"
    assert cfg["env"]["batch_size"] == 32  # from the preset
    assert cfg["run"]["total_steps"] == 7  # --set wins over the flag
    assert cfg["seed"] == 0  # a flag left at None keeps the value


def test_unknown_preset_variant_and_key():
    with pytest.raises(C.ConfigError, match="unknown preset 'big'"):
        C.load("search", preset="big")
    with pytest.raises(C.ConfigError, match="unknown variant 'x'"):
        C.load("search", variant="x")
    with pytest.raises(C.ConfigError, match="score has no variants"):
        C.load("score", variant="disc-nwot")
    with pytest.raises(C.ConfigError, match="unknown config key 'env.bach_size'") as e:
        C.load("search", sets=["env.bach_size=3"])
    assert "env.batch_size" in str(e.value)  # the keys near it are listed
    assert e.value.key == "env.bach_size"


@pytest.mark.parametrize(
    "item, key, value",
    [
        ("env.num_envs=4", ("env", "num_envs"), 4),
        ("env.num_envs=4.0", ("env", "num_envs"), 4),
        ("run.total_steps=1e3", ("run", "total_steps"), 1000),
        ("ppo.learning_rate=1e-3", ("ppo", "learning_rate"), 1e-3),
        ("ppo.gamma=1", ("ppo", "gamma"), 1.0),
        ("env.reward_norm=true", ("env", "reward_norm"), True),
        ("env.augment_valid=off", ("env", "augment_valid"), False),
        ("env.invalid_reward=null", ("env", "invalid_reward"), None),
        ("env.invalid_reward=-5", ("env", "invalid_reward"), -5.0),
        ("compat=dartsrl", ("compat",), "dartsrl"),
        ("compat=null", ("compat",), None),
        ("data.dataset=npz:a=b.npz", ("data", "dataset"), "npz:a=b.npz"),
    ],
)
def test_set_parses_text_by_the_key_type(item, key, value):
    cfg = C.load("search", sets=[item])
    node = cfg
    for k in key:
        node = node[k]
    assert node == value and type(node) is type(value)


@pytest.mark.parametrize(
    "item, message",
    [
        ("env.num_envs=0", "env.num_envs must be an integer >= 1, got 0"),
        ("env.num_envs=2.5", "env.num_envs must be an integer >= 1, got '2.5'"),
        ("env.num_envs=four", "got 'four'"),
        ("ppo.gamma=1.5", "ppo.gamma must be a finite number >= 0 and <= 1"),
        ("ppo.learning_rate=nan", "ppo.learning_rate must be"),
        ("env.sentinel=0", "> 0"),
        ("env.grad_obs=maybe", "env.grad_obs must be true or false"),
        ("env.reward=bogus", "env.reward must be one of ['nwot', 'acc', 'loss']"),
        ("seed=null", "seed must be an integer >= 0, got 'null'"),
        ("env.batch_size=1", "must be >= 2 for the nwot reward"),
        ("supernet.channels=5", "even number"),
        ("env.num_envs", "--set needs KEY=VALUE"),
    ],
)
def test_bad_values_are_refused_with_key_and_expectation(item, message):
    with pytest.raises(C.ConfigError) as e:
        C.load("search", sets=[item])
    assert message in str(e.value)


def test_validate_catches_edits_of_a_loaded_config():
    cfg = C.load("search")
    cfg["env"]["num_envs"] = True  # a bool is not an int here
    with pytest.raises(C.ConfigError, match="env.num_envs"):
        C.validate("search", cfg)
    cfg = C.load("search")
    del cfg["ppo"]["gamma"]
    with pytest.raises(C.ConfigError, match="missing keys: ppo.gamma"):
        C.validate("search", cfg)
    cfg = C.load("search")
    cfg["extra"] = 1
    with pytest.raises(C.ConfigError, match="unknown config key 'extra'"):
        C.validate("search", cfg)


def test_cross_key_rules():
    with pytest.raises(C.ConfigError, match="needs a pre-trained supernet"):
        C.load("search", variant="cont-loss-step")
    with pytest.raises(C.ConfigError, match="cannot use the nwot reward"):
        C.load("search", variant="cont-acc-step", sets=["supernet.checkpoint=x", "env.reward=nwot"])  # fmt: skip
    with pytest.raises(C.ConfigError, match="continuous env only"):
        C.load("search", sets=["env.weight_step=true"])


def test_variants_follow_the_paper():
    for v in search_configs.VARIANTS:
        cfg = C.load("search", variant=v, sets=["supernet.checkpoint=x"])
        kind = "continuous" if v.startswith("cont") else "discrete"
        assert cfg["env"]["kind"] == kind
        reward = "acc" if "acc" in v else "loss" if "loss" in v else "nwot"
        assert cfg["env"]["reward"] == reward
        assert cfg["env"]["grad_obs"] == ("grad" in v)
        assert cfg["env"]["weight_step"] == (kind == "continuous")
        assert (v in search_configs.NEEDS_CHECKPOINT) == ("ckpt" in v or kind == "continuous")  # fmt: skip


def test_load_saved_applies_flags_on_the_saved_config():
    saved = json.loads(json.dumps(C.load("search", preset="quick")))
    cfg = C.load_saved("search", saved, overrides={"run.total_steps": "9999"})
    assert cfg["run"]["total_steps"] == 9999 and cfg["preset"] == "quick"
    assert saved["run"]["total_steps"] != 9999  # not modified in place
    with pytest.raises(C.ConfigError, match="env.num_envs"):
        C.load_saved("search", saved, sets=["env.num_envs=-1"])


def test_load_saved_fills_keys_added_since_with_what_the_run_used():
    # Runs saved before `supernet.edges` existed scanned their edges.
    saved = json.loads(json.dumps(C.load("search")))
    del saved["supernet"]["edges"]
    assert C.load_saved("search", saved)["supernet"]["edges"] == "scan"
    saved["supernet"]["edges"] = "unroll"
    assert C.load_saved("search", saved)["supernet"]["edges"] == "unroll"


@pytest.mark.parametrize(
    "variant, preset, sets, form",
    [
        ("disc-nwot", "paper", [], "unroll"),  # paper size, discrete path only
        ("disc-acc", "paper", [], "unroll"),
        ("disc-nwot", "quick", [], "scan"),  # small supernet
        ("disc-nwot", "paper", ["supernet.channels=8"], "scan"),
        ("disc-nwot", "paper", ["env.reward_path=dense"], "scan"),
        ("cont-acc-step", "paper", ["supernet.checkpoint=x"], "scan"),  # dense step
        ("disc-nwot", "paper", ["supernet.edges=scan"], "scan"),
        ("disc-nwot", "quick", ["supernet.edges=unroll"], "unroll"),
    ],
)
def test_edge_form_of_a_search_config(variant, preset, sets, form):
    from jaxdarts.build import edge_form

    cfg = C.load("search", variant=variant, preset=preset, sets=sets)
    assert edge_form(cfg) == form


@pytest.mark.parametrize(
    "variant, sets",
    [
        ("cont-acc-step", ["supernet.checkpoint=x"]),
        ("cont-loss-grad-step", ["supernet.checkpoint=x"]),
        ("disc-nwot", ["env.reward_path=dense"]),
    ],
)
def test_unrolled_edges_are_refused_on_the_dense_path(variant, sets):
    with pytest.raises(
        C.ConfigError, match="supernet.edges=unroll is for the discrete"
    ):
        C.load("search", variant=variant, sets=sets + ["supernet.edges=unroll"])
    C.load("search", variant=variant, sets=sets + ["supernet.edges=scan"])


def test_describe_explains_keys_that_are_not_self_evident():
    text = C.describe("search", C.load("search"))
    line = next(x for x in text.splitlines() if x.startswith("env.sentinel"))
    assert "= 1000000.0" in line and "one-hot" in line
    line = next(x for x in text.splitlines() if x.startswith("env.lam"))
    assert "lam * a" in line
    assert "[ppo]" in text


def test_preset_value():
    assert C.preset_value("search", "quick", "data.dataset") == "digits"
    assert C.preset_value("search", "paper", "data.dataset") == "cifar10"
    assert C.preset_value("search", "paper", "nope.key") is None


# ------------------------------------------------------------------ cli pieces


def _parser():
    p = cli.parser("search", "test")
    flags = cli.add_config_flags(p, "search", {"--num-envs": "env.num_envs"})
    cli.add_run_args(p, "runs/x")
    return p, flags


def test_config_flags_name_the_flag_in_errors():
    p, flags = _parser()
    args = p.parse_args(["--num-envs", "0"])
    with pytest.raises(cli.UsageError, match="^--num-envs: env.num_envs must be"):
        cli.config_from_args("search", args, flags)
    args = p.parse_args(["--set", "env.num_envs=0"])
    with pytest.raises(cli.UsageError, match="^env.num_envs must be"):
        cli.config_from_args("search", args, flags)


def test_flag_help_comes_from_the_schema(capsys):
    p, _ = _parser()
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "environments run in lockstep" in out
    assert "[env.num_envs; default 1; quick: 8]" in out
    assert "(default: None)" not in out


def test_check_run_args():
    p, _ = _parser()
    with pytest.raises(cli.UsageError, match="drop --out"):
        cli.check_run_args(p.parse_args(["--resume", "a", "--out", "b"]))
    with pytest.raises(cli.UsageError, match="--devices must be >= 1"):
        cli.check_run_args(p.parse_args(["--devices", "0"]))
    cli.check_run_args(p.parse_args(["--resume", "a"]))


def test_run_main_exit_codes(capsys):
    def bad(argv):
        raise cli.UsageError("nope")

    def interrupted(argv):
        raise KeyboardInterrupt

    assert cli.run_main(bad) == 2 and "error: nope" in capsys.readouterr().err
    assert cli.run_main(interrupted) == 130
    assert cli.run_main(lambda argv: 0) == 0


def test_usage_errors_turns_setup_errors_into_usage_errors():
    from jaxdarts.data import DataNotFoundError

    for exc in (ValueError("v"), FileNotFoundError("f"), ImportError("i")):
        with pytest.raises(cli.UsageError), cli.usage_errors():
            raise exc
    with pytest.raises(cli.UsageError, match="--preset quick"), cli.usage_errors():
        raise DataNotFoundError("no data")
    with pytest.raises(RuntimeError), cli.usage_errors():
        raise RuntimeError("a bug stays a bug")


def test_argparse_namespace_without_resume():
    args = argparse.Namespace(preset="quick", variant=None, set=[])
    assert cli.config_from_args("search", args, {})["preset"] == "quick"
