"""Build a family from a config entry: a built-in name, or an import path for your own.

A user's own config may name `import: module:Class`; a data or model file may not make
bayes_et import anything: `family_from_record` only builds built-in families, or the
family the user passes."""

from __future__ import annotations

import importlib
import json
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
        except Exception as err:  # any failure of the user's import is a bad setting
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


def _canonical(spec: Any) -> Any:
    spec = {"name": spec} if isinstance(spec, str) else spec
    if isinstance(spec, dict):
        spec = {"args": {}, **spec}
    return json.loads(json.dumps(spec, sort_keys=True, default=str))


def same_family(a: Any, b: Any) -> bool:
    """Whether two family specs (or families) name the same family: name (or import path)
    and arguments."""
    a, b = (family_spec(x) if isinstance(x, ExponentialFamily) else x for x in (a, b))
    return _canonical(a) == _canonical(b)


def family_from_record(spec: Any, given: ExponentialFamily | str | None = None,
                       field: str = "family") -> ExponentialFamily:
    """The family a data or model file records in `spec`. A built-in family is built; an
    `import:` recorded in a file is never imported on the file's say-so: pass the family
    (`given`, an instance, or the same 'module:Class' string) to load such a file. With
    `given`, the file must record that family (name and arguments)."""
    if isinstance(given, str):
        if not (isinstance(spec, dict) and spec.get("import") == given):
            raise ValueError(f"{field}: the file records the family {spec!r}, not {given!r}")
        return build_family(spec, field)
    if given is not None:
        if not same_family(given, spec):
            raise ValueError(f"{field}: the file records the family {spec!r}; the family "
                             f"given is {family_spec(given)!r}")
        return given
    if isinstance(spec, dict) and "import" in spec:
        raise ValueError(f"{field}: the file records the family {spec.get('import')!r}, which "
                         "is not built in; a file never chooses what is imported: pass the "
                         "family yourself (--family MODULE:CLASS, or family=... in Python)")
    return build_family(spec, field)
