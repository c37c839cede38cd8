"""The README's settings tables against the settings classes (one source of truth): every
setting is in its table, and every default the README states is the class's default."""

import dataclasses
import math
import re
import typing
from pathlib import Path

import pytest

from bayes_et.cavi import AuditSettings, NetworkSettings, SolverSettings
from bayes_et.data import DataSettings
from bayes_et.train import TrainSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
NOT_STATED = {"–", "—"}


def _table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table after `heading`, without its header."""
    lines = README[README.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _split(text: str) -> list[str]:
    """`text` cut at the commas outside brackets and braces."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{" and 1 or char in "]}" and -1 or 0
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return parts + [current.strip()] if current.strip() else parts


def _value(text: str):
    """A README literal: a number, bool, list, {key: value} mapping or word; None when
    the cell is prose."""
    text = text.strip().strip("`").strip()
    if re.fullmatch(r"\w+: .*", text):  # a mapping's body
        text = "{" + text + "}"
    if text.startswith("{") and text.endswith("}"):
        pairs = [p.split(":", 1) for p in _split(text[1:-1])]
        return {k.strip(): _value(v) for k, v in pairs} if all(len(p) == 2 for p in pairs) \
            else None
    if text.startswith("[") and text.endswith("]"):
        return [_value(p) for p in _split(text[1:-1])]
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return text if re.fullmatch(r"[A-Za-z_]+", text) else None


def _same(stated, default) -> bool:
    if isinstance(default, bool) or isinstance(stated, bool):
        return stated is default
    if isinstance(default, (int, float)):
        return isinstance(stated, float) and math.isclose(stated, default, rel_tol=1e-12)
    if isinstance(default, (tuple, list)):
        return isinstance(stated, list) and len(stated) == len(default) and all(
            _same(s, d) for s, d in zip(stated, default, strict=True))
    if dataclasses.is_dataclass(default):
        return isinstance(stated, dict) and all(
            _same(v, getattr(default, k)) for k, v in stated.items())
    return stated == default


def _fields(cls, prefix: str = "", instance=None) -> dict:
    """Every setting by its dotted path -> its default (MISSING when required); a nested
    setting's defaults are those of its parent's default instance, when it has one."""
    out, hints = {}, typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if instance is not None:
            default = getattr(instance, f.name)
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        out[prefix + f.name] = default
        if dataclasses.is_dataclass(hints[f.name]):
            nested = default if dataclasses.is_dataclass(default) else None
            out |= _fields(hints[f.name], f"{prefix}{f.name}.", nested)
    return out


def _check_table(heading: str, cls) -> int:
    """Asserts each table row's stated default; returns how many it compared."""
    fields, compared, keys = _fields(cls), 0, set()
    for cells in _table(heading):
        names = re.findall(r"`([^`]+)`", cells[0])
        keys |= set(names)
        stated = [cells[1]] if len(names) == 1 else _split(cells[1])
        assert len(stated) == len(names), cells
        for name, text in zip(names, stated, strict=True):
            assert name in fields, f"README row {name!r} is no field of {cls.__name__}"
            if text in NOT_STATED:
                assert fields[name] in (dataclasses.MISSING, None), name
                continue
            value = _value(text)
            if value is not None:
                assert _same(value, fields[name]), (name, text, fields[name])
                compared += 1
    missing = [f for f in fields if not any(f == k or f.startswith(k + ".")
                                            or k.startswith(f + ".") for k in keys)]
    assert not missing, f"settings of {cls.__name__} not in the README's table: {missing}"
    return compared


@pytest.mark.parametrize(("heading", "cls", "least"), [
    ("A dataset config (`configs/data/*.yaml`", DataSettings, 11),
    ("`configs/train/` has one config per architecture", TrainSettings, 12),
])
def test_a_settings_table_states_the_classes_defaults(heading, cls, least):
    assert _check_table(heading, cls) >= least


def test_the_cavi_solver_and_network_rows_state_the_classes_defaults():
    rows = {cells[0]: cells[1] for cells in _table("members' posterior means with theirs")}
    solver = _value(re.search(r"`([^`]*)`", rows["`solver`"]).group(1))
    fields = _fields(SolverSettings)
    assert set(solver) == {f for f in fields if "." not in f}
    for name, value in solver.items():
        # the audit is None until a provider names an oracle: the README states its defaults
        expected = AuditSettings() if name == "audit" else fields[name]
        assert _same(value, expected), (name, value, expected)
    assert set(solver["audit"]) == {f.name for f in dataclasses.fields(AuditSettings)}
    network = _value(re.search(r"`(\{network: [^`]*\})`", rows["`providers`"]).group(1))
    assert set(network) == {f.name for f in dataclasses.fields(NetworkSettings)}
    for name in ("max_spread", "margin", "num_samples"):
        assert _same(network[name], getattr(NetworkSettings, name)), name
