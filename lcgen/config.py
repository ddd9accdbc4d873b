"""Dataclass configs: one way in for every setting.

Precedence, lowest first: dataclass defaults < ``--config FILE.yaml`` < named CLI flags <
``--set section.key=value``. Values from YAML and ``--set`` are checked and converted against the
dataclass field types (PyYAML reads ``3e-4`` as a string; it becomes a float here). Unknown keys
fail with a did-you-mean suggestion. A resolved config dumps back to YAML that is itself a valid
``--config`` file, and every output file stores that YAML.

A setting that was renamed stays readable under its old name: a config class lists
``RENAMED = {"old": "new"}`` (a ``ClassVar``). Saved configs (run directories, checkpoints) are
read with the new name silently; a user's YAML or ``--set`` gets a ``FutureWarning`` saying so.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from lcgen.errors import LcgenError


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a dataclass config (lists, not tuples, so YAML stays plain)."""
    return plain(dataclasses.asdict(cfg))


def config_to_yaml(cfg: Any) -> str:
    """YAML text of a config, loadable again with ``--config``."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_from_dict(cls: type, data: dict, *, where: str = "") -> Any:
    """Build ``cls`` from a (possibly partial) nested dict, checking keys and types.

    The dataclass is constructed once from the given values (missing ones take their defaults),
    so a ``__post_init__`` that derives one field from another sees only what was given.
    """
    if not isinstance(data, dict):
        raise LcgenError(f"{where or 'config'}: expected a mapping of settings, got {data!r}")
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    values = {}
    for key, value in renamed(cls, data, where, warn=False).items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise LcgenError(f"unknown setting '{path}'{_did_you_mean(key, fields, where)}")
        values[key] = coerce(value, hints[key], path)
    return cls(**values)


def merge(cfg: Any, data: dict, *, where: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with the values of ``data`` laid over it."""
    if not isinstance(data, dict):
        raise LcgenError(f"{where or 'config'}: expected a mapping of settings, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = get_type_hints(type(cfg))
    changes = {}
    for key, value in renamed(type(cfg), data, where, warn=True).items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise LcgenError(f"unknown setting '{path}'{_did_you_mean(key, fields, where)}")
        current = getattr(cfg, key)
        if isinstance(current, dict) or dataclasses.is_dataclass(current):
            if value is None:  # a YAML section holding only comments
                continue
            if isinstance(value, dict):
                # Sections merge: `--set model.x=1` adds to a `model:` section, never replaces it.
                merged = merge(current, value, where=path) if dataclasses.is_dataclass(current) \
                    else _deep_update(dict(current), value)
                changes[key] = coerce(merged, hints[key], path)
                continue
        changes[key] = coerce(value, hints[key], path)
    return dataclasses.replace(cfg, **changes)


def renamed(cls: type, data: dict, where: str = "", *, warn: bool) -> dict:
    """``data`` with the old names of renamed settings (``cls.RENAMED``) replaced by the new ones;
    with ``warn``, a FutureWarning for each. Both names at once is an error."""
    names = getattr(cls, "RENAMED", {})
    if not any(key in names for key in data):
        return data
    out = {}
    for key, value in data.items():
        new = names.get(key)
        if new is None:
            out.setdefault(key, value)
            continue
        old_path, new_path = (f"{where}.{k}" if where else k for k in (key, new))
        if new in data:
            raise LcgenError(f"settings '{old_path}' and '{new_path}' are the same setting (the first is its "
                             f"old name); give only '{new_path}'")
        if warn:
            warnings.warn(f"setting '{old_path}' is now called '{new_path}'; the old name will stop working "
                          f"in a later version", FutureWarning, stacklevel=3)
        out[new] = value
    return out


def parse_set(items: list[str] | None) -> dict:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a": {"b": 1}, "c": "x"}`` (values via yaml.safe_load)."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise LcgenError(f"--set expects KEY=VALUE (e.g. --set lr=3e-4), got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LcgenError(f"--set {item}: '{part}' is set both as a value and a section")
        node[parts[-1]] = value
    return out


def nest_flags(flags: dict) -> dict:
    """``{"a.b": 1, "c": None}`` → ``{"a": {"b": 1}}``: dotted keys nested, unset (None) dropped."""
    nested: dict = {}
    for key, value in flags.items():
        if value is None:
            continue
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def _deep_update(base: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _deep_update(dict(base[key]), value)
        else:
            base[key] = value
    return base


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file into a dict, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise LcgenError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LcgenError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LcgenError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def resolve_config(cls: type, *, config_file: str | Path | None = None, flags: dict | None = None,
                   sets: list[str] | None = None, base: Any = None) -> Any:
    """Resolve a config: defaults (or ``base``) < YAML file < flags < ``--set`` overrides.

    ``flags`` maps dotted keys to values; a value of ``None`` means "flag not given" and is
    dropped, so CLI defaults never override the config.
    """
    cfg = base if base is not None else cls()
    if config_file is not None:
        cfg = merge(cfg, load_yaml(config_file), where="")
    if flags:
        cfg = merge(cfg, nest_flags(flags))
    if sets:
        cfg = merge(cfg, parse_set(sets))
    return cfg


def coerce(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against type ``hint`` and convert where it is safe (str→float, int→float)."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, path)
            except LcgenError:
                pass
        raise LcgenError(f"setting '{path}' = {value!r} is not {_type_name(hint)}")
    if origin is typing.Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise LcgenError(f"setting '{path}' = {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise LcgenError(f"setting '{path}' = {value!r} is not a list ({_type_name(hint)})")
        args = get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise LcgenError(f"setting '{path}' = {value!r} needs {len(args)} values")
            return tuple(coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise LcgenError(f"setting '{path}' = {value!r} is not a mapping ({_type_name(hint)})")
        kt, vt = get_args(hint) or (Any, Any)
        return {coerce(k, kt, path): coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return config_from_dict(hint, value, where=path)
        raise LcgenError(f"setting '{path}' = {value!r} must be a mapping of {hint.__name__} settings")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise LcgenError(f"setting '{path}' = {value!r} is not a bool (use true or false)")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):  # YAML 1.1 reads 1e2 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise LcgenError(f"setting '{path}' = {value!r} is not an int")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 3e-4 as a string
            except ValueError:
                pass
        raise LcgenError(f"setting '{path}' = {value!r} is not a float")
    if hint is str:
        if isinstance(value, str):
            return value
        raise LcgenError(f"setting '{path}' = {value!r} is not a str")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise LcgenError(f"setting '{path}' = {value!r} is not a {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(hint))
    if get_origin(hint) is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _did_you_mean(key: str, options, where: str = "") -> str:
    prefix = f"{where}." if where else ""
    close = difflib.get_close_matches(str(key), list(options), n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; known settings: {', '.join(prefix + o for o in sorted(options))}"


def plain(value: Any) -> Any:
    """Tuples become lists, recursively, so values dump to plain YAML."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
