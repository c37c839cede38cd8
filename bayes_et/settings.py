"""Typed settings: frozen dataclasses parsed from YAML or dicts, with one error form.

Every setting of bayes_et (data, sampler, training, stages, solver, providers, pipeline)
is a field here, with its default and its check; the library's functions take these
objects, or keyword arguments whose defaults are read from them, so a default lives in
one place. Errors read ``config key 'a.b': got V; allowed: ...``.
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


# ---------------------------------------------------------------- the settings


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """MCMC on the unconstrained space: the kernel (NUTS or ChEES-HMC), chains per eta,
    warm-up and kept draws, and the quality gate (R-hat, ESS) with its re-runs."""

    kernel: str = setting("nuts", choice("nuts", "chees"))
    num_chains: int = setting(4, integer(2, 1024))
    num_warmup: int = setting(500, integer(1, 10**6))
    num_samples: int = setting(1000, integer(4, 10**7))
    target_accept: float = setting(0.8, number(0.0, 1.0, low_open=True, high_open=True))
    rhat_max: float = setting(1.01, number(1.0, 10.0, low_open=True))
    ess_min: float = setting(400.0, number(0.0))
    max_retries: int = setting(2, integer(0, 10))

    def validate(self, key: str) -> None:
        # HMC can beat independent draws, but not by 10x: a gate above that flags every eta
        most = 10 * self.num_chains * self.num_samples * 2**self.max_retries
        if self.ess_min > most:
            fail(f"{key}.ess_min" if key else "ess_min", self.ess_min,
                 f"at most 10 x num_chains x num_samples x 2^max_retries = {most} (else "
                 "every eta is flagged)")


@dataclasses.dataclass(frozen=True)
class EtaSettings:
    """How many eta, their design, and an optional box per statistic ([lo, hi])."""

    num: int = setting(check=integer(1, 10**8))
    design: str = setting("uniform", choice("uniform", "log_uniform", "grid"))
    box: dict | None = setting(None, optional(mapping))


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """A dataset-generation config (configs/data/*.yaml)."""

    family: Any = setting(check=None, doc="a family name or {name|import, args}")
    eta: EtaSettings = setting(check=nested(EtaSettings))
    method: str = setting("auto", choice("auto", "closed_form", "quadrature", "mcmc"))
    sampler: SamplerSettings = setting(SamplerSettings(), nested(SamplerSettings))
    chunk_size: int = setting(512, integer(1, 10**7))
    seed: int = setting(0, integer(0, SEED_MAX))


@dataclasses.dataclass(frozen=True)
class StageSettings:
    """One training stage: map (means), vi (widths) or joint."""

    name: str = setting(check=choice("map", "vi", "joint"))
    epochs: int = setting(check=integer(1, 10**7))
    lr: float = setting(3e-3, number(0.0, 10.0, low_open=True))
    warmup: float = setting(0.05, number(0.0, 1.0))
    patience: int = setting(50, integer(1, 10**7))
    num_mc: int = setting(1, integer(1, 1024))


@dataclasses.dataclass(frozen=True)
class LikelihoodSettings:
    noise_floor: float = setting(1e-4, number(0.0, 1e3, low_open=True))
    fisher_weight: float = setting(0.0, number(0.0))
    init_misfit: float = setting(0.1, number(0.0, 1e3, low_open=True))


@dataclasses.dataclass(frozen=True)
class DrawSettings:
    num_samples: int = setting(64, integer(2, 100_000))


def _architecture(key: str, value: Any) -> str:
    from bayes_et.et import ARCHITECTURES

    return choice(*ARCHITECTURES)(key, value)


def _split(key: str, value: Any) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    fractions = tuple(number(0.0, 1.0, low_open=True)(key, v) for v in value) if ok else ()
    if not ok or abs(sum(fractions) - 1.0) > 1e-9:
        fail(key, value, "three fractions > 0 (train, validation, test) summing to 1")
    return fractions


@dataclasses.dataclass(frozen=True)
class ActiveSettings:
    """Active learning after training: `rounds` times, score `candidates` x `num_eta`
    uniform eta of the data's box by predictive spread (design: spread) or not at all
    (design: uniform, the baseline), generate data at the `num_eta` chosen (the data's
    method) and continue training from the last weights."""

    rounds: int = setting(0, integer(0, 1000))
    num_eta: int = setting(100, integer(1, 10**7))
    candidates: int = setting(4, integer(1, 1000))
    design: str = setting("spread", choice("spread", "uniform"))


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """For MCMC data: recalibrate on `num_eta` extra eta sampled with `draws_factor` times
    the data's draws (targets precise enough to show the network's error) instead of the
    validation split; 0: the validation split."""

    num_eta: int = setting(0, integer(0, 10**6))
    draws_factor: int = setting(16, integer(1, 10**4))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """A training config (configs/train/*.yaml)."""

    architecture: str = setting(check=_architecture)
    data: str | None = setting(None, optional(text))
    network: dict = setting(check=mapping, factory=dict)
    seed: int = setting(0, integer(0, SEED_MAX))
    split: tuple[float, float, float] = setting((0.8, 0.1, 0.1), _split)
    batch_size: int = setting(256, integer(1, 10**7))
    optimizer: str = setting("adam", choice("adam", "natural_sgd"))
    clip_norm: float = setting(1.0, number(0.0, low_open=True))
    prior_scale: float = setting(1.0, number(0.0, low_open=True))
    likelihood: LikelihoodSettings = setting(LikelihoodSettings(), nested(LikelihoodSettings))
    stages: tuple[StageSettings, ...] = setting(
        (StageSettings("map", 300), StageSettings("vi", 100, lr=1e-2)), list_of(StageSettings))
    predictive: DrawSettings = setting(DrawSettings(), nested(DrawSettings))
    validation: DrawSettings = setting(DrawSettings(8), nested(DrawSettings))
    active: ActiveSettings = setting(ActiveSettings(), nested(ActiveSettings))
    calibration: CalibrationSettings = setting(CalibrationSettings(),
                                               nested(CalibrationSettings))


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """The audit of a CAVI answer: `members` members of each audited factor (all when the
    factor has fewer), drawn without replacement with NumPy's generator `seed`, stratified
    along the members' eta (two per stratum) or by simple random sampling."""

    members: int = setting(30, integer(1, 10**8))
    seed: int = setting(0, integer(0, SEED_MAX))
    design: str = setting("stratified", choice("stratified", "simple"))


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """CAVI: sweeps, tolerance on the relative fixed-point residual (the undamped change of
    eta, so damping never fakes convergence), damping, function draws, and the audit
    (None: no audit; the oracles are named per factor beside the network)."""

    max_iter: int = setting(100, integer(1, 10**7))
    tol: float = setting(1e-6, number(0.0))
    damping: float = setting(0.0, number(0.0, 1.0, high_open=True))
    num_draws: int = setting(0, integer(0, 100_000))
    seed: int = setting(0, integer(0, SEED_MAX))
    track_elbo: bool = setting(True, boolean)
    accelerate: bool = setting(True, boolean, doc="SQUAREM cycles: the same fixed point in "
                               "fewer sweeps")
    audit: AuditSettings | None = setting(None, optional(nested(AuditSettings)))


ORACLES = ("exact", "gauss_hermite", "quadrature", "sampling")


@dataclasses.dataclass(frozen=True)
class NetworkSettings:
    """A network provider: its run folder, fallback and flag thresholds."""

    network: str = setting(check=text)
    fallback: str = setting("exact", choice(*ORACLES, "none"))
    max_spread: float = setting(0.1, number(0.0, low_open=True))
    margin: float = setting(0.0, number(0.0))
    num_samples: int = setting(64, integer(2, 100_000))
    audit: str | None = setting(None, optional(choice(*ORACLES)),
                                doc="the oracle that audits this factor (solver.audit)")


@dataclasses.dataclass(frozen=True)
class SliceSettings:
    """The pipeline's line of eta (start to stop, num points)."""

    start: tuple[float, ...] = setting(check=numbers())
    stop: tuple[float, ...] = setting(check=numbers())
    num: int = setting(check=integer(2, 100_000))


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """`bayes-et run`: data, train and cavi sections (each checked by its own settings)."""

    data: DataSettings = setting(check=nested(DataSettings))
    train: TrainSettings = setting(check=nested(TrainSettings))
    slice: SliceSettings = setting(check=nested(SliceSettings))
    cavi: dict = setting(check=mapping)
    out: str = setting("runs/quickstart", text)


__all__ = [
    "AuditSettings", "DataSettings", "DrawSettings", "EtaSettings", "LikelihoodSettings",
    "NetworkSettings", "PipelineSettings", "SamplerSettings", "SliceSettings", "SolverSettings",
    "StageSettings", "TrainSettings", "as_dict", "fail", "parse", "read_config", "read_yaml",
]
