"""Head configs from the command line and from JSON, typed by the dataclass annotations.

`--set key=value` is read once, at the command line's edge (`parse_sets`: {key: value});
the Python API passes the same dict with typed values. `build_config` converts each value
to the field's annotated type (int, float, str, bool, Path, Literal, X | None,
tuple[X, ...], list[X]): a CLI string and the typed value it spells give the same config.
`--ablate X` appends to the `ablate: tuple[str, ...]` field. The same converter turns a
saved `config.json` back into the dataclass, so heads can reload their config without
pickle.
"""
from __future__ import annotations

import dataclasses
import re
import types
from pathlib import Path
from typing import Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints

from pipeline.core.errors import PipeError

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}
_NONE = {"none", "null", ""}


class _Bad(ValueError):
    pass


def coerce(value: Any, tp: Any) -> Any:
    """`value` (a CLI string or a JSON value) as type `tp`; raises ValueError when it cannot."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(value, a)
            except (ValueError, TypeError):
                continue
        raise _Bad(f"not one of {[getattr(a, '__name__', str(a)) for a in args]}")
    if origin is Literal:
        for a in args:
            try:
                if coerce(value, type(a)) == a:
                    return a
            except (ValueError, TypeError):
                continue
        raise _Bad(f"not one of {list(args)}")
    if origin in (tuple, list):
        items = value
        if isinstance(value, str):
            items = [s.strip() for s in value.split(",")] if value.strip() else []
        if not isinstance(items, (list, tuple)):
            raise _Bad("expected a comma-separated list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise _Bad(f"expected {len(args)} comma-separated values")
            return tuple(coerce(v, a) for v, a in zip(items, args))
        elem = args[0] if args else Any
        out = [coerce(v, elem) for v in items]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise _Bad("expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise _Bad("expected an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return int(str(value).strip().replace("_", ""))
    if tp is float:
        if isinstance(value, bool):
            raise _Bad("expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise _Bad("expected a string")
        return str(value)
    if tp is Path:
        return Path(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Bad(f"cannot convert to {tp}")


def field_types(config_cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation (works with `from __future__ import annotations`)."""
    hints = get_type_hints(config_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_sets(items: list[str] | None, option: str = "--set") -> dict[str, str]:
    """`--set key=value` items -> {key: raw value}; dashes in keys read as underscores. One pair
    per `--set`: `--set "a=1 b=2"` is refused rather than read as a = "1 b=2". `option`
    names the flag in errors (`--task-set`)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise PipeError(f"{option} {item!r}: expected key=value")
        if re.search(r"\s[A-Za-z_][\w-]*=", raw):
            raise PipeError(f"{option} {item!r}: one key=value per {option} ({option} a=1 {option} b=2)")
        out[key] = raw
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """`--config FILE`: a flat mapping of the keys `--set` takes (`max_steps: 20`), from YAML
    (`.yaml`, `.yml`, or `.json`: JSON is YAML) or TOML (`.toml`). Lists become comma-separated
    values and null `none`, as on the command line; a nested mapping is refused."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise PipeError(f"--config {p}: cannot read it ({e.strerror or e})") from None
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            doc: Any = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml", ".json"):
            import yaml

            doc = yaml.safe_load(text) or {}
        else:
            raise PipeError(f"--config {p}: expected a .yaml, .yml, .json or .toml file")
    except PipeError:
        raise
    except Exception as e:  # yaml.YAMLError, tomllib.TOMLDecodeError
        raise PipeError(f"--config {p}: not valid {p.suffix[1:].upper()}: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise PipeError(f"--config {p}: expected a mapping of --set keys (e.g. `max_steps: 20`), got {type(doc).__name__}")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            raise PipeError(f"--config {p}: {key} is a nested mapping; the file is a flat mapping of --set keys")
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        out[str(key).replace("-", "_")] = "none" if value is None else value
    return out


def build_config(head_name: str, config_cls: type, values: Mapping[str, Any] | None = None,
                 ablate: list[str] | None = None) -> Any:
    """The head's Config with `values` ({key: CLI string or typed value}) and ablations; PipeError on bad input."""
    types_ = field_types(config_cls)
    kwargs: dict[str, Any] = {}
    for key, raw in (values or {}).items():
        if key not in types_:
            raise PipeError(f"--set {key}: head {head_name!r} has no such setting; valid keys: {', '.join(types_)}")
        try:
            kwargs[key] = coerce(raw, types_[key])
        except (ValueError, TypeError) as e:
            raise PipeError(f"--set {key}={raw!r}: expected {_type_name(types_[key])} ({e})") from None
    if ablate:
        if "ablate" not in types_:
            raise PipeError(f"head {head_name!r} has no ablations (--ablate {' '.join(ablate)})")
        default = next(f for f in dataclasses.fields(config_cls) if f.name == "ablate")
        base = kwargs.get("ablate")
        if base is None:
            base = default.default_factory() if default.default_factory is not dataclasses.MISSING else default.default
        kwargs["ablate"] = tuple(dict.fromkeys([*tuple(base or ()), *ablate]))  # no repeats, order kept
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise PipeError(f"head {head_name!r}: invalid config: {e}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists, paths strings)."""
    out = {}
    for k, v in dataclasses.asdict(config).items():
        out[k] = str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
    return out


def config_from_dict(config_cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a config from `config_to_dict` output; unknown keys are an error (a stale file)."""
    types_ = field_types(config_cls)
    unknown = sorted(set(d) - set(types_))
    if unknown:
        raise PipeError(f"saved config has unknown keys {unknown} for {config_cls.__qualname__}")
    try:
        return config_cls(**{k: coerce(v, types_[k]) for k, v in d.items()})
    except (ValueError, TypeError) as e:
        raise PipeError(f"saved config does not fit {config_cls.__qualname__}: {e}") from None


def with_seed(config: Any, seed: int) -> Any:
    """A copy with `seed` replaced; configs without a seed field are returned as they are."""
    if any(f.name == "seed" for f in dataclasses.fields(config)):
        return dataclasses.replace(config, seed=seed)
    return config
