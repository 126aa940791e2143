"""The config layer every stage shares: dataclass configs validated in ``__post_init__``.

A stage's config is a dataclass beside the stage; each field carries its help text (the CLI's
options are generated from it, :mod:`coderl.cliopts`), and ``__post_init__`` calls
:func:`validate`, so a bad value fails when the config is built, with a message naming the key:

    @dataclass
    class ExampleConfig:
        lr: float = opt(2e-5, "Learning rate.", gt=0)
        mode: str = opt("lora", "Backbone mode.", choices=("full", "lora"))

        def __post_init__(self):
            validate(self, "example")

``validate`` checks every field against its annotation (``int``, ``float``, ``bool``, ``str``,
``X | None``, ``list[X]``), ``choices`` and the numeric bounds ``ge`` / ``gt`` / ``le`` / ``lt``
given to :func:`opt`. Numbers written as strings (``"4s"``), ``"no"`` for a bool and a comma
string for a list are rejected, not coerced. An int is accepted where a float is expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A bad config value; the message names the file (where known) and the key."""


def opt(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple | None = None,
        ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
        factory: Any = None, cli: bool = True, flag: str | None = None, shown: str | None = None):
    """A dataclass field with help text and validation rules. ``cli=False``: no CLI option;
    ``flag``: the option's name (default ``--field-name``); ``shown``: the default the help shows."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "cli": cli,
            "flag": flag, "shown": shown}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(tp)
        return not args or all(_check_type(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return not isinstance(tp, type) or isinstance(value, tp)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def validate(cfg: Any, section: str = "") -> None:
    """Check every field of the dataclass ``cfg`` (see the module docstring); raise ConfigError."""
    hints = typing.get_type_hints(type(cfg))
    prefix = f"{section}." if section else ""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = prefix + f.name
        tp = hints.get(f.name, Any)
        if not _check_type(value, tp):
            hint = ""
            if isinstance(value, str) and _check_type(1.5, tp) and _is_number(value):
                hint = (f" (YAML reads {value} as text: write it with a dot and a signed exponent, "
                        f"e.g. {float(value):.1e}".replace("e-0", "e-").replace("e+0", "e+") + ")")
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}{hint}")
        m = f.metadata
        if not m or value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if m.get("choices") is not None and v not in m["choices"]:
                raise ConfigError(f"{key}: {v!r} is not one of {list(m['choices'])}")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if v != v:  # NaN
                    raise ConfigError(f"{key}: NaN is not a valid value")
                for bound, ok, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                        ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
                    if m.get(bound) is not None and not ok(v, m[bound]):
                        raise ConfigError(f"{key}: must be {word} {m[bound]}, got {v!r}")


def check_keys(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` (None: ``{}``) if a mapping of ``cls``'s fields; else ConfigError naming ``where``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    return data


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build the dataclass ``cls`` from a mapping; errors name ``where`` and the key."""
    data = check_keys(cls, data, where)
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:  # ConfigError included
        raise ConfigError(f"{where}: {e}") from None


def fingerprint(obj: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of a dataclass that decide what a stage writes (``exclude``: those that do
    not), as a dict; a learning rate left null counts as the default it means (``learning_rate``)."""
    d = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
    if d.get("lr", 0) is None and hasattr(obj, "learning_rate"):
        d["lr"] = obj.learning_rate
    # settings added after boxes were written leave the fingerprint while at their default, so
    # those boxes still resume (a config class lists them in ADDED_SETTINGS)
    for name in getattr(type(obj), "ADDED_SETTINGS", ()):
        f = next((f for f in dataclasses.fields(obj) if f.name == name), None)
        if f is not None and d.get(name) == (f.default_factory() if f.default_factory is not dataclasses.MISSING
                                             else f.default):
            d.pop(name, None)
    return {k: v for k, v in d.items() if k not in exclude}


def digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
