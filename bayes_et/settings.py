"""Typed settings: frozen dataclasses parsed from YAML or dicts, with one error form.

The machinery only: each settings class (a frozen dataclass whose fields carry their
default and check, `setting`) lives beside what it configures (data and sampler in
bayes_et.data, training in bayes_et.train, solver, providers and audit in bayes_et.cavi,
the pipeline in bayes_et.quickstart), and this module imports none of them. `parse` builds
one from YAML or a dict once, at the edge; the library's functions take the objects, or
keyword arguments whose defaults are read from them, so a default lives in one place.
Errors read ``config key 'a.b': got V; allowed: ...``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

S = TypeVar("S")
Check = Callable[[str, Any], Any]


def fail(key: str, value: Any, allowed: str) -> NoReturn:
    """Raise the one error form for a bad setting."""
    shown = repr(value)
    shown = shown if len(shown) <= 200 else f"{shown[:200]}... ({len(shown)} characters)"
    raise ValueError(f"config key '{key or '<top level>'}': got {shown}; allowed: {allowed}")


# ---------------------------------------------------------------- checks (key, value) -> value


def integer(lo: int, hi: int | None = None) -> Check:
    def check(key, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo or (
                hi is not None and value > hi):
            fail(key, value, f"an int >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
        return value
    return check


def number(lo: float = -math.inf, hi: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> Check:
    """A finite number in the interval (NaN and inf are never allowed)."""
    def check(key, value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
            value) and (lo < value if low_open else lo <= value) and (
            value < hi if high_open else value <= hi)
        if not ok:
            fail(key, value, f"a finite number {_interval(lo, hi, low_open, high_open)}")
        return float(value)
    return check


def _interval(lo: float, hi: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(hi):
        return f"{'>' if low_open else '>='} {lo:g}" if math.isfinite(lo) else ""
    if math.isinf(lo):
        return f"{'<' if high_open else '<='} {hi:g}"
    return f"in {'(' if low_open else '['}{lo:g}, {hi:g}{')' if high_open else ']'}"


def choice(*options: str) -> Check:
    def check(key, value):
        if value not in options:
            fail(key, value, ", ".join(options))
        return value
    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(key, value, "true or false")
    return value


def text(key: str, value: Any) -> str:
    if not (isinstance(value, str) and value):
        fail(key, value, "a non-empty string")
    return value


def mapping(key: str, value: Any) -> dict:
    if not isinstance(value, Mapping):
        fail(key, value, "a mapping")
    return dict(value)


def optional(check: Check) -> Check:
    return lambda key, value: None if value is None else check(key, value)


def numbers(length: int | None = None) -> Check:
    """A list of finite numbers (of `length`), as a tuple of floats."""
    def check(key, value):
        if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length) \
                or not value:
            fail(key, value, f"a list of {length or 'one or more'} finite numbers")
        return tuple(number()(f"{key}[{i}]", v) for i, v in enumerate(value))
    return check


def nested(cls: type) -> Check:
    return lambda key, value: parse(cls, value, key)


def list_of(cls: type) -> Check:
    def check(key, value):
        if not (isinstance(value, (list, tuple)) and value):
            fail(key, value, f"a non-empty list of {cls.__name__} mappings")
        return tuple(parse(cls, v, f"{key}[{i}]") for i, v in enumerate(value))
    return check


def setting(default: Any = dataclasses.MISSING, check: Check | None = None, *,
            factory: Callable[[], Any] | None = None, doc: str = "") -> Any:
    """A dataclass field with its check (and default, or factory for a mutable one)."""
    meta = {"check": check, "doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------- parsing


def known_keys(key: str, raw: Any, allowed, required=()) -> dict:
    """`raw` as a dict after checking its keys against `allowed` and `required`."""
    if not isinstance(raw, Mapping):
        fail(key, raw, "a mapping")
    prefix = f"{key}." if key else ""
    for name in raw:
        if name not in allowed:
            raise ValueError(f"config key '{prefix}{name}' is unknown; allowed: "
                             f"{', '.join(sorted(allowed))}")
    for name in required:
        if name not in raw:
            raise ValueError(f"config key '{prefix}{name}' is missing (required)")
    return dict(raw)


def parse(cls: type[S], raw: Mapping | S | None, key: str = "") -> S:
    """A `cls` settings object from a mapping (None: all defaults), every value checked."""
    if isinstance(raw, cls):
        return raw
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    raw = known_keys(key, {} if raw is None else raw, {f.name for f in fields}, required)
    prefix = f"{key}." if key else ""
    values = {}
    for f in fields:
        if f.name in raw and f.metadata.get("check") is not None:
            values[f.name] = f.metadata["check"](prefix + f.name, raw[f.name])
        elif f.name in raw:
            values[f.name] = raw[f.name]
    out = cls(**values)
    validate = getattr(out, "validate", None)
    if validate is not None:
        validate(key)
    return out


def as_dict(settings: Any) -> dict:
    """Plain JSON data (dicts, lists, numbers) of a settings object."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


MAX_NODES = 100_000  # values in one config, aliases expanded (an alias bomb stops here)
INT_RANGE = (-(2**63), 2**63 - 1)  # what the arrays and keys downstream can hold
SEED_MAX = 2**32 - 1  # seeds: offsets added to them stay within int64


class _StrictLoader(yaml.SafeLoader):
    """YAML as plain JSON data: duplicate keys refused; timestamps read as strings;
    binary, sets and other non-JSON types refused."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


def _refused(loader: _StrictLoader, node: yaml.Node):
    raise yaml.constructor.ConstructorError(
        None, None, f"the YAML type {node.tag} is not allowed (only JSON-like data)",
        node.start_mark)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
for _tag in ("binary", "set", "omap", "pairs", "timestamp"):
    _StrictLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refused)
_StrictLoader.yaml_implicit_resolvers = {  # a date is read as the string it is
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def check_plain(value: Any, key: str = "") -> Any:
    """`value` is plain JSON-like data of bounded size: str keys, finite-size ints, at
    most MAX_NODES values with aliases expanded; else a ValueError naming the key."""
    count = 0
    stack = [(key, value)]
    while stack:
        where, item = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ValueError(f"config: more than {MAX_NODES} values (aliases expanded); "
                             "allowed: a config of ordinary size")
        if isinstance(item, Mapping):
            for k, v in item.items():
                if not isinstance(k, str):
                    fail(where, k, "mapping keys that are strings")
                stack.append((f"{where}.{k}" if where else k, v))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
        elif isinstance(item, bool) or item is None or isinstance(item, (str, float)):
            continue
        elif isinstance(item, int):
            if not INT_RANGE[0] <= item <= INT_RANGE[1]:
                fail(where, item, "an integer within [-2**63, 2**63 - 1]")
        else:
            fail(where, item, "plain data (mappings, lists, strings, numbers, booleans)")
    return value


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file's content as plain data (see `_StrictLoader`, `check_plain`); a syntax
    error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: no such file {str(path)!r}")
    try:
        raw = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        kind = "error" if isinstance(err, yaml.constructor.ConstructorError) else "syntax error"
        raise ValueError(f"config file {str(path)!r}: YAML {kind} at {where}: "
                         f"{problem}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {str(path)!r}: not UTF-8 text") from None
    except RecursionError:
        raise ValueError(f"config file {str(path)!r}: nested too deeply") from None
    return check_plain(raw)


def read_config(source: str | os.PathLike | Mapping) -> dict:
    """A config as a fresh dict: a deep copy of `source`, or the YAML file it names."""
    if isinstance(source, Mapping):
        raw = json.loads(json.dumps(check_plain(dict(source))))
    else:
        raw = read_yaml(source)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        fail("", raw, "a mapping of config keys")
    return raw


__all__ = [
    "as_dict", "boolean", "choice", "fail", "integer", "known_keys", "mapping", "nested",
    "number", "optional", "parse", "read_config", "read_yaml", "setting", "text",
]
