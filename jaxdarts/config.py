"""One config system for every command: base + preset (+ variant) + overrides, validated.

Each command (``search``, ``pretrain``, ``train``, ``score``) has a module in
``configs/`` (installed as ``jaxdarts.configs``) that holds its config as data:

- ``get_config() -> dict``: every default, nested in groups (``data``, ``supernet``...);
- ``PRESETS: dict[str, dict]``: named overrides (``paper`` = the paper's setting,
  ``quick`` = the shared small size of ``configs/common.py``);
- ``VARIANTS: dict[str, dict]`` (optional): named overrides applied before the preset;
- ``SCHEMA: dict[str, Key]``: for every dotted key, its type, valid range or choices
  and a one-line explanation (what ``--print-config`` shows);
- ``RESUME_MAY_CHANGE: tuple[str, ...]`` (optional): keys that may differ on
  ``--resume`` (a data folder that moved, say);
- ``check(config) -> None`` (optional): rules that tie several keys together; raises
  :class:`ConfigError`.

:func:`load` builds a command's config and validates it before anything is read or
written, so ``--print-config`` refuses a bad value too. Values given as text
(``--set key=value``) are parsed against the key's type; a bad value is refused with
the key, the expected type or range, and the value given.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ConfigError",
    "Key",
    "COMMANDS",
    "config_module",
    "presets",
    "variants",
    "load",
    "load_saved",
    "preset_value",
    "validate",
    "set_value",
    "get_value",
    "parse_sets",
    "describe",
    "flatten",
]

#: The commands that have a config module in ``configs/``.
COMMANDS = ("search", "pretrain", "train", "score")


class ConfigError(ValueError):
    """A config value or key that cannot be used; the message says what to do.

    Attributes:
      key: the dotted key at fault, where there is one (a flag can then be named).
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclasses.dataclass(frozen=True)
class Key:
    """The rule and the explanation of one config key.

    Attributes:
      help: one line for ``--print-config`` and ``--help``.
      type: ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"list"``, ``"dict"`` or
        ``"any"``.
      lo, hi: inclusive bounds for numbers (None: unbounded).
      lo_open, hi_open: make the bound exclusive.
      choices: the allowed values (for ``str`` keys mostly).
      nullable: whether ``null`` is a valid value (it then means what ``help`` says).
    """

    help: str
    type: str = "any"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False

    def expected(self) -> str:
        """Human-readable expectation, e.g. ``an integer >= 1`` or ``one of [...]``."""
        if self.choices is not None:
            text = f"one of {list(self.choices)}"
        else:
            text = {
                "int": "an integer",
                "float": "a finite number",
                "bool": "true or false",
                "str": "a string",
                "list": "a JSON list",
                "dict": "a JSON object",
            }.get(self.type, "a value")
            bounds = []
            if self.lo is not None:
                bounds.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
            if self.hi is not None:
                bounds.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
            if bounds:
                text += " " + " and ".join(bounds)
        if self.nullable:
            text += " (or null)"
        return text


def config_module(command: str):
    """The ``jaxdarts.configs.<command>`` module."""
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r}; commands are {list(COMMANDS)}")
    return importlib.import_module(f"jaxdarts.configs.{command}")


def presets(command: str) -> list[str]:
    """The preset names of a command."""
    return list(config_module(command).PRESETS)


def variants(command: str) -> list[str]:
    """The variant names of a command (empty if it has none)."""
    return list(getattr(config_module(command), "VARIANTS", {}))


def flatten(
    config: Mapping[str, Any], schema: Mapping[str, Key] | None = None, prefix: str = ""
) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; a key that ``schema`` names is a leaf."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and (schema is None or name not in schema):
            out.update(flatten(v, schema, name + "."))
        else:
            out[name] = v
    return out


def _merge(dst: dict, src: Mapping) -> dict:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def _known_keys(schema: Mapping[str, Key], dotted: str) -> str:
    head = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    near = [k for k in schema if k.startswith(head)] if head else []
    near = near or list(schema)
    return ", ".join(sorted(near))


def get_value(config: Mapping[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; KeyError if absent."""
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _parse_text(text: str, key: Key, dotted: str) -> Any:
    t = text.strip()
    if t.lower() in ("null", "none") and key.nullable:
        return None
    if key.type == "int":
        try:
            return int(t)
        except ValueError:
            pass
        try:
            f = float(t)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f == int(f):
            return int(f)
        raise ConfigError(f"{dotted} must be {key.expected()}, got {text!r}", dotted)
    if key.type == "float":
        try:
            return float(t)
        except ValueError:
            raise ConfigError(
                f"{dotted} must be {key.expected()}, got {text!r}", dotted
            ) from None
    if key.type == "bool":
        low = t.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{dotted} must be true or false, got {text!r}", dotted)
    if key.type == "str":
        return t
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        if key.type in ("list", "dict"):
            raise ConfigError(
                f"{dotted} must be {key.expected()}, got {text!r}", dotted
            ) from None
        return t


def set_value(
    config: dict[str, Any], schema: Mapping[str, Key], dotted: str, value: Any
) -> None:
    """Sets ``config[a][b] = value`` for ``"a.b"``; text is parsed by the key's type.

    Raises:
      ConfigError: an unknown key (the message lists the keys near it) or a text
        value that does not parse as the key's type.
    """
    if dotted not in schema:
        raise ConfigError(
            f"unknown config key {dotted!r}; known keys: {_known_keys(schema, dotted)}",
            dotted,
        )
    key = schema[dotted]
    if isinstance(value, str) and key.type != "str":
        value = _parse_text(value, key, dotted)
    elif (
        isinstance(value, str)
        and key.nullable
        and value.strip().lower()
        in (
            "null",
            "none",
        )
    ):
        value = None
    parts = dotted.split(".")
    node = config
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def parse_sets(items: Iterable[str]) -> list[tuple[str, str]]:
    """``["a.b=1", ...]`` -> ``[("a.b", "1"), ...]``; refuses items without ``=``."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(
                f"--set needs KEY=VALUE (e.g. --set env.batch_size=32), got {item!r}"
            )
        k, v = item.split("=", 1)
        out.append((k.strip(), v))
    return out


def _check_value(dotted: str, value: Any, key: Key) -> None:
    if value is None:
        if key.nullable:
            return
        raise ConfigError(f"{dotted} must be {key.expected()}, got null", dotted)
    bad = ConfigError(f"{dotted} must be {key.expected()}, got {value!r}", dotted)
    t = key.type
    if t == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):
            raise bad
    if t == "bool" and not isinstance(value, bool):
        raise bad
    if t == "str" and not isinstance(value, str):
        raise bad
    if t == "list" and not isinstance(value, list):
        raise bad
    if t == "dict" and not isinstance(value, dict):
        raise bad
    if key.choices is not None and value not in key.choices:
        raise bad
    if t in ("int", "float"):
        if key.lo is not None and (value <= key.lo if key.lo_open else value < key.lo):
            raise bad
        if key.hi is not None and (value >= key.hi if key.hi_open else value > key.hi):
            raise bad


def validate(command: str, config: Mapping[str, Any]) -> None:
    """Checks every key of a command's config against its schema and rules.

    Raises:
      ConfigError: naming the first bad or unknown key, what it must be, and the
        value given.
    """
    mod = config_module(command)
    schema: Mapping[str, Key] = mod.SCHEMA
    flat = flatten(config, schema)
    for dotted, value in flat.items():
        if dotted not in schema:
            raise ConfigError(
                f"unknown config key {dotted!r}; known keys: "
                f"{_known_keys(schema, dotted)}",
                dotted,
            )
        _check_value(dotted, value, schema[dotted])
    missing = [k for k in schema if k not in flat]
    if missing:
        raise ConfigError(f"config is missing keys: {', '.join(sorted(missing))}")
    check = getattr(mod, "check", None)
    if check is not None:
        check(config)


def _normalise_numbers(config: dict, schema: Mapping[str, Key]) -> None:
    for dotted, key in schema.items():
        if key.type != "float":
            continue
        try:
            v = get_value(config, dotted)
        except (KeyError, TypeError):
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            set_value(config, schema, dotted, float(v))


def load(
    command: str,
    *,
    preset: str | None = None,
    variant: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """Builds and validates a command's config.

    Order: ``get_config()``, then the variant, then the preset, then ``overrides``
    (dotted key -> value; ``None`` values are skipped, as flags not given), then
    ``sets`` (``"key=value"`` strings, as ``--set``).

    Args:
      command: one of :data:`COMMANDS`.
      preset: a name of the command's ``PRESETS`` (None: ``"paper"``).
      variant: a name of the command's ``VARIANTS`` (search only).
      overrides: dotted key -> value (typed, or text parsed by the key's type).
      sets: ``KEY=VALUE`` strings.

    Returns:
      The JSON-able config; ``config["preset"]`` (and ``config["variant"]``) record
      the names used.

    Raises:
      ConfigError: an unknown preset, variant or key, or a bad value.
    """
    mod = config_module(command)
    schema = mod.SCHEMA
    preset = preset or "paper"
    if preset not in mod.PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; presets: {list(mod.PRESETS)}")
    config = mod.get_config()
    all_variants = getattr(mod, "VARIANTS", None)
    if all_variants is not None:
        variant = variant or config.get("variant")
        if variant not in all_variants:
            raise ConfigError(
                f"unknown variant {variant!r}; variants: {list(all_variants)}"
            )
        _merge(config, all_variants[variant])
        config["variant"] = variant
    elif variant is not None:
        raise ConfigError(f"{command} has no variants")
    _merge(config, mod.PRESETS[preset])
    config["preset"] = preset
    return _apply(command, config, schema, overrides, sets)


def load_saved(
    command: str,
    saved: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """A run's saved config with ``overrides`` and ``sets`` applied, validated
    (``--resume``: the saved config is the base, not the preset). Keys added since
    the run was saved take the command's ``SAVED_DEFAULTS`` (what the run used)."""
    mod = config_module(command)
    schema = mod.SCHEMA
    config = copy.deepcopy(dict(saved))
    for dotted, value in getattr(mod, "SAVED_DEFAULTS", {}).items():
        try:
            get_value(config, dotted)
        except (KeyError, TypeError):
            set_value(config, schema, dotted, value)
    return _apply(command, config, schema, overrides, sets)


def _apply(
    command: str,
    config: dict[str, Any],
    schema: Mapping[str, Key],
    overrides: Mapping[str, Any] | None,
    sets: Sequence[str],
) -> dict[str, Any]:
    """``config`` with ``overrides`` (``None`` values skipped) then the ``--set``
    strings applied, numbers normalised, validated for ``command``."""
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_value(config, schema, dotted, value)
    for dotted, value in parse_sets(sets):
        set_value(config, schema, dotted, value)
    _normalise_numbers(config, schema)
    validate(command, config)
    return config


def preset_value(command: str, preset: str, dotted: str) -> Any:
    """The value of ``dotted`` in a preset (default variant), not validated; None
    if the command has no such key (for help texts)."""
    mod = config_module(command)
    config = mod.get_config()
    kinds = getattr(mod, "VARIANTS", None)
    if kinds:
        _merge(config, kinds.get(config.get("variant"), {}))
    _merge(config, mod.PRESETS.get(preset, {}))
    try:
        return get_value(config, dotted)
    except (KeyError, TypeError):
        return None


def describe(command: str, config: Mapping[str, Any]) -> str:
    """The config as ``key = value  # explanation`` lines (``--print-config``)."""
    schema = config_module(command).SCHEMA
    flat = flatten(config, schema)
    width = max((len(k) for k in flat), default=0)
    lines = [f"# {command} config (set any key with --set KEY=VALUE)"]
    group = None
    for dotted, value in flat.items():
        head = dotted.split(".")[0] if "." in dotted else None
        if head != group and head is not None:
            lines.append(f"[{head}]")
        group = head
        key = schema.get(dotted)
        note = f"  # {key.help}; {key.expected()}" if key else ""
        lines.append(f"{dotted:<{width}} = {json.dumps(value)}{note}")
    return "\n".join(lines)
