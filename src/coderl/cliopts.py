"""CLI options generated from config dataclasses, so that no default or help text is written twice.

    @verb(app, "generate", {"problems": ProblemsConfig, "generation": GenerationConfig})
    def generate_cmd(out: Path = typer.Option(..., "--out"), *, given):
        cfg = from_dict(GenerationConfig, given["generation"], "generation options")

Every field of each config becomes an option ``--field-name`` (``opt(..., flag="--k")`` renames
it, ``cli=False`` leaves it out; a nested dataclass such as ``ExecConfig.limits`` contributes its
fields). The option's default is ``None`` and its help shows the config's default (or
``opt(..., shown=...)``), so the verb receives only what the user typed, in ``given[section]``,
and never a second copy of a default. Bools are ``--x/--no-x`` flags; ``list`` fields are
repeatable; an optional field typed as ``null`` or ``none`` is None.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Optional

import typer


def _plain_type(tp: Any) -> Any:
    """The annotation typer should see: ``Optional[X]`` for every option (default None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else str
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1] or (str,)
        return Optional[list[inner]]
    if tp is Any or origin is dict:
        return Optional[str]
    return Optional[tp]


def _default_text(f: dataclasses.Field) -> str:
    if (f.metadata or {}).get("shown"):
        return f.metadata["shown"]
    if f.default is not dataclasses.MISSING:
        d = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        d = f.default_factory()  # type: ignore[misc]
    else:
        return "required"
    if isinstance(d, bool):
        return "yes" if d else "no"
    if d is None:
        return "none"
    if isinstance(d, list):
        return ", ".join(map(str, d)) or "none"
    return str(d)


def config_params(cls: type, path: tuple[str, ...] = ()) -> list[tuple[inspect.Parameter, tuple[str, ...], bool]]:
    """(typer parameter, field path, accepts None) for every CLI field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata or {}
        if meta.get("cli") is False:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += config_params(tp, path + (f.name,))
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        help_text = (meta.get("help") or "").strip()
        if meta.get("choices"):
            help_text += f" One of: {', '.join(map(str, meta['choices']))}."
        help_text += f" (default: {_default_text(f)})"
        ptype = _plain_type(tp)
        decls = [f"{flag}/--no-{flag[2:]}" if tp is bool else flag]
        extra = {}
        if typing.get_origin(typing.get_args(ptype)[0]) is list:
            extra["metavar"] = f"<{typing.get_args(typing.get_args(ptype)[0])[0].__name__}>"
        param = inspect.Parameter("_".join(path + (f.name,)), inspect.Parameter.KEYWORD_ONLY, annotation=ptype,
                                  default=typer.Option(None, *decls, help=help_text, show_default=False, **extra))
        nullable = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
        out.append((param, path + (f.name,), nullable))
    return out


def verb(app: typer.Typer, name: str, configs: dict[str, type], **command_kw) -> Callable:
    """Register ``fn`` as the verb ``name`` with ``configs``'s options (``fn(given=...)``)."""

    def deco(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "given"]
        own_hints = typing.get_type_hints(fn)
        generated, owners = [], {}
        for section, cls in configs.items():
            for param, fpath, nullable in config_params(cls):
                pname = f"{section}__{param.name}"
                if any(p.name == pname for p in own) or pname in owners:
                    raise TypeError(f"{name}: option {pname} defined twice")
                generated.append(param.replace(name=pname))
                owners[pname] = (section, fpath, nullable)
        flags = {}
        for p in generated:
            for decl in p.default.param_decls:
                for part in decl.split("/"):
                    if part in flags:
                        raise TypeError(f"{name}: flag {part} of {p.name} clashes with {flags[part]}")
                    flags[part] = p.name

        def wrapper(**kwargs):
            given: dict[str, dict] = {s: {} for s in configs}
            for pname, (section, fpath, nullable) in owners.items():
                value = kwargs.pop(pname, None)
                if value is None:
                    continue
                if nullable and isinstance(value, str) and value.strip().lower() in ("null", "none"):
                    value = None
                d = given[section]
                for part in fpath[:-1]:
                    d = d.setdefault(part, {})
                d[fpath[-1]] = list(value) if isinstance(value, (list, tuple)) else value
            return fn(**kwargs, given=given)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {**{p.name: own_hints.get(p.name, p.annotation) for p in own},
                                   **{p.name: p.annotation for p in generated}}
        wrapper.__doc__ = fn.__doc__
        wrapper.__name__ = fn.__name__
        app.command(name, **command_kw)(wrapper)
        return fn

    return deco
