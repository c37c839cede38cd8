"""Build a family from a config entry: a built-in name, or an import path for your own."""

from __future__ import annotations

import importlib
from typing import Any

from ._family import ExponentialFamily


def build_family(spec: Any, field: str = "family") -> ExponentialFamily:
    """`spec` is a name ("Gamma"), or {"name": ..., "args": {...}}, or
    {"import": "package.module:ClassName", "args": {...}}."""
    from . import FAMILIES

    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{field}: expected a family name or a mapping; got {spec!r}")
    unknown = set(spec) - {"name", "import", "args"}
    if unknown:
        raise ValueError(f"{field}: unknown key(s) {sorted(unknown)}; allowed: args, import, name")
    if ("name" in spec) == ("import" in spec):
        raise ValueError(f"{field}: give exactly one of 'name' or 'import'; got {sorted(spec)}")
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{field}.args: expected a mapping; got {args!r}")
    if "name" in spec:
        if spec["name"] not in FAMILIES:
            raise ValueError(
                f"{field}.name: unknown family {spec['name']!r}; allowed: {sorted(FAMILIES)}"
            )
        cls = FAMILIES[spec["name"]]
    else:
        target = spec["import"]
        module_name, _, class_name = str(target).partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(
                f"{field}.import: cannot import {target!r} (expected 'package.module:ClassName'):"
                f" {err}"
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, ExponentialFamily)):
            raise ValueError(f"{field}.import: {target!r} is not an ExponentialFamily subclass")
    try:
        return cls(**args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field}.args: {err}") from None


def family_spec(family: ExponentialFamily) -> dict[str, Any]:
    """The config entry that rebuilds `family` (inverse of `build_family`)."""
    from . import FAMILIES

    cls = type(family)
    args = dict(vars(family))
    if FAMILIES.get(cls.__name__) is cls:
        return {"name": cls.__name__, "args": args}
    return {"import": f"{cls.__module__}:{cls.__qualname__}", "args": args}
