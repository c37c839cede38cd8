"""A mean-field model: exponential-family factors (single or plates) and multilinear terms.

log p = sum_i sum_members eta_i0 . T_i + sum_terms sum_m coef_m prod_k T_{f_k}[s_k](member_k(m))

A factor is single (eta0 of shape (d,)) or a plate of N conditionally independent members
of one family (eta0 of shape (N, d)), each with its own q. A term is a product of one
statistic of each of two or more distinct factors, replicated over M members when it
touches a plate (a per-member coefficient allowed); a plate's member of term row m is
m itself, or index[m] when the term links it through an index array. Under the mean field
the update of factor i adds to eta_i[s], for every term holding T_i[s], coef times the
product of the other factors' <T_k[s_k]> (summed over rows for a single factor, segment
sums over members for a plate). Pairwise couplings T_i^T A_ij T_j are two-factor terms.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from bayes_et.expfam import ExponentialFamily, build_family


class Factor(NamedTuple):
    """One factor: its family and its own natural parameters eta0, (d,) for a single factor
    or (N, d) for a plate of N members: the terms of log p in T_i alone (prior plus data).
    eta0 may lie outside the natural-parameter space when the terms complete it."""

    family: ExponentialFamily
    eta0: Any


class Stat(NamedTuple):
    """One statistic of one factor in a term: `factor['x']`, or `factor['x'][index]` to link
    term row m to plate member index[m]."""

    factor: str
    label: str
    coordinate: int
    index: np.ndarray | None = None

    def __getitem__(self, index) -> Stat:
        if self.index is not None:
            raise ValueError(f"{self.factor}[{self.label!r}]: already indexed")
        return self._replace(index=np.asarray(index))

    def __repr__(self):
        return f"{self.factor}[{self.label!r}]" + ("[index]" if self.index is not None else "")


class Block(NamedTuple):
    """Every component of one (vector) statistic of a factor, in order: `factor.block('x')`,
    or `factor.block('x')[index]` to link term rows to plate members (`Model.product`)."""

    stats: tuple[Stat, ...]

    def __getitem__(self, index) -> Block:
        return Block(tuple(s[index] for s in self.stats))


class FactorRef(NamedTuple):
    """What `Model.factor` returns: index it by a statistic label to use it in a term."""

    name: str
    family: ExponentialFamily
    size: int | None

    def __getitem__(self, label: str) -> Stat:
        labels = self.family.flat_names
        if label not in labels:
            raise ValueError(f"factor '{self.name}': unknown statistic {label!r}; allowed: "
                             f"{list(labels)}")
        return Stat(self.name, label, labels.index(label))

    def block(self, label: str) -> Block:
        """All components of statistic `label` (e.g. 'x' of a MultivariateNormal: x[0], ...)."""
        names = list(self.family.stat_shapes)
        if label not in names:
            raise ValueError(f"factor '{self.name}': unknown statistic {label!r}; allowed: "
                             f"{names}")
        size = self.family.stat_sizes[names.index(label)]
        flat = [label] if size == 1 and label in self.family.flat_names else [
            f"{label}[{j}]" for j in range(size)]
        return Block(tuple(self[f] for f in flat))


class Term(eqx.Module):
    """coef * prod_k T_{factors[k]}[coordinates[k]], over `rows` rows; members[k] maps row m
    to a member of plate factors[k] (None for a single factor or a plate aligned with the
    rows)."""

    factors: tuple[int, ...] = eqx.field(static=True)
    coordinates: tuple[int, ...] = eqx.field(static=True)
    rows: int = eqx.field(static=True)
    coef: Float[Array, " rows"]
    members: tuple[Int[Array, " rows"] | None, ...]

    def values(self, means: tuple[Array, ...], skip: int | None = None) -> Float[Array, " rows"]:
        """coef_m * prod_{k != skip} <T_k[s_k]> per row m (skip: a position in the term)."""
        out = self.coef
        for k, (i, s, members) in enumerate(zip(self.factors, self.coordinates, self.members,
                                                strict=True)):
            if k == skip:
                continue
            value = means[i][..., s]
            out = out * (value if members is None else value[members])
        return out


class CAVIModel(eqx.Module):
    """Factors (in update order) and terms, ready for `run_cavi`. Arrays are pytree leaves,
    so one compiled solver serves every model of the same structure and shapes (e.g. new
    data); the traced program does not grow with the number of plate members."""

    names: tuple[str, ...] = eqx.field(static=True)
    families: tuple[ExponentialFamily, ...] = eqx.field(static=True)
    sizes: tuple[int | None, ...] = eqx.field(static=True)
    eta0: tuple[Float[Array, "n d"], ...]  # (1, d) for a single factor; NumPy until traced
    terms: tuple[Term, ...]

    def __init__(self, factors: dict[str, Factor | tuple],
                 couplings: dict[tuple[str, str], Any] | None = None,
                 terms: list[tuple[Any, tuple[Stat, ...]]] = ()):
        """factors: name -> Factor(family, eta0); couplings: (name_i, name_j) -> A_ij, the
        (d_i, d_j) matrix of T_i^T A_ij T_j (single factors); terms: (coef, stats) pairs as
        `Model.term` records them."""
        if not isinstance(factors, dict) or not factors:
            raise ValueError(f"factors: expected a non-empty mapping name -> Factor; got "
                             f"{factors!r}")
        names, families, sizes, eta0 = [], [], [], []
        for name, factor in factors.items():
            family, eta = Factor(*factor)
            if not isinstance(family, ExponentialFamily):
                raise ValueError(f"factor '{name}': family must be an ExponentialFamily; "
                                 f"got {family!r}")
            eta = np.asarray(eta, np.float64)
            if eta.ndim not in (1, 2) or eta.shape[-1] != family.eta_dim or len(eta) == 0 \
                    or not np.all(np.isfinite(eta)):
                raise ValueError(
                    f"factor '{name}': eta0 must be finite of shape ({family.eta_dim},) or "
                    f"(N, {family.eta_dim}) for a plate (statistics {list(family.flat_names)});"
                    f" got shape {eta.shape}" + ("" if eta.size == 0 or np.all(np.isfinite(eta))
                                                 else " with non-finite entries"))
            names.append(str(name))
            families.append(family)
            sizes.append(len(eta) if eta.ndim == 2 else None)
            eta0.append(np.atleast_2d(eta))  # a single factor is held as one row
        self.names, self.families = tuple(names), tuple(families)
        self.sizes, self.eta0 = tuple(sizes), tuple(eta0)
        refs = {n: FactorRef(n, f, s) for n, f, s in zip(names, families, sizes, strict=True)}
        recorded = list(terms)
        for key, matrix in (couplings or {}).items():
            recorded += _coupling_terms(refs, key, matrix)
        self.terms = tuple(self._term(n, coef, stats) for n, (coef, stats) in
                           enumerate(recorded))

    def _term(self, n: int, coef, stats: tuple[Stat, ...]) -> Term:
        where = f"term {n} ({' * '.join(map(repr, stats))})"
        index = {name: i for i, name in enumerate(self.names)}
        if len(stats) < 2:
            raise ValueError(f"{where}: needs statistics of two or more factors; got "
                             f"{len(stats)}")
        for stat in stats:
            if not isinstance(stat, Stat) or stat.factor not in index:
                raise ValueError(f"{where}: {stat!r} is not a statistic of a model factor "
                                 f"(use factor['label']); factors: {list(self.names)}")
        seen = [s.factor for s in stats]
        twice = sorted({f for f in seen if seen.count(f) > 1})
        if twice:
            raise ValueError(f"{where}: factor '{twice[0]}' appears twice; a term takes one "
                             "statistic of each of distinct factors")
        rows = None  # rows M: the length of the index arrays, else the aligned plates' size
        for stat in stats:
            size = self.sizes[index[stat.factor]]
            if stat.index is not None:
                if size is None:
                    raise ValueError(f"{where}: factor '{stat.factor}' is single; only plates "
                                     "take an index array")
                length = stat.index.shape[0] if stat.index.ndim == 1 else -1
                if rows is not None and length != rows:
                    raise ValueError(f"{where}: index array of factor '{stat.factor}' has "
                                     f"shape {stat.index.shape}; allowed: ({rows},), one "
                                     "entry per term row")
                rows = length
                if length < 1 or not np.issubdtype(stat.index.dtype, np.integer) or \
                        stat.index.min() < 0 or stat.index.max() >= size:
                    raise ValueError(f"{where}: index array of factor '{stat.factor}' must be "
                                     f"a non-empty 1-D int array with entries in [0, {size}); "
                                     f"got shape {stat.index.shape}, dtype {stat.index.dtype}"
                                     + (f", range [{stat.index.min()}, {stat.index.max()}]"
                                        if stat.index.size else ""))
        for stat in stats:
            size = self.sizes[index[stat.factor]]
            if size is not None and stat.index is None:
                if rows is not None and size != rows:
                    raise ValueError(f"{where}: plate '{stat.factor}' has {size} members but "
                                     f"the term has {rows} rows; link it with an index array "
                                     f"({stat.factor}[...][index])")
                rows = size
        rows = 1 if rows is None else rows
        coef = np.asarray(coef, np.float64)
        try:
            coef = np.broadcast_to(coef, (rows,)).copy()
        except ValueError:
            raise ValueError(f"{where}: coef of shape {coef.shape} does not broadcast to the "
                             f"term's {rows} rows; allowed: a number or shape ({rows},)") from None
        if not np.all(np.isfinite(coef)):
            raise ValueError(f"{where}: coef has non-finite entries")
        return Term(tuple(index[s.factor] for s in stats), tuple(s.coordinate for s in stats),
                    rows, coef, tuple(None if s.index is None else s.index.astype(np.int32)
                                      for s in stats))

    def target(self, i: int, means: tuple[Array, ...]) -> Float[Array, "n d"]:
        """The CAVI update of factor i, (n_i, d_i) (one row for a single factor): eta_i0
        plus, per term holding T_i[s], coef times the other factors' means (summed over rows,
        or segment-summed onto plate members). `means`: one (n_j, d_j) array per factor."""
        eta = jnp.asarray(self.eta0[i])
        for term in self.terms:
            for k, (j, s) in enumerate(zip(term.factors, term.coordinates, strict=True)):
                if j != i:
                    continue
                values = term.values(means, skip=k)
                if self.sizes[i] is None:
                    eta = eta.at[:, s].add(jnp.sum(values))
                elif term.members[k] is None:
                    eta = eta.at[:, s].add(values)
                else:
                    eta = eta.at[:, s].add(jax.ops.segment_sum(
                        values, term.members[k], num_segments=self.sizes[i]))
        return eta

    def coupled(self, i: int) -> np.ndarray:
        """Boolean mask (d_i,): the coordinates of eta_i that the terms move."""
        mask = np.zeros(self.families[i].eta_dim, bool)
        for term in self.terms:
            for j, s in zip(term.factors, term.coordinates, strict=True):
                mask[s] |= j == i
        return mask

    def neighbours(self, i: int) -> set[int]:
        """The factors that share a term with factor i."""
        return {j for t in self.terms if i in t.factors for j in t.factors if j != i}

    def energy(self, means: tuple[Array, ...]) -> Float[Array, ""]:
        """E_q[log p] up to the base measures and a constant: sum over factors and members of
        eta_i0 . <T_i> plus every term's sum over rows of coef prod <T>."""
        total = sum(jnp.sum(jnp.asarray(e) * m) for e, m in zip(self.eta0, means, strict=True))
        return total + sum(jnp.sum(t.values(means)) for t in self.terms)


def _coupling_terms(refs: dict[str, FactorRef], key, matrix) -> list:
    """The two-factor terms of T_a^T A T_b: one per non-zero entry of A."""
    if not (isinstance(key, tuple) and len(key) == 2 and all(k in refs for k in key)
            and key[0] != key[1]):
        raise ValueError(f"coupling {key!r}: expected a pair of two different factor names "
                         f"from {list(refs)}")
    a, b = refs[key[0]], refs[key[1]]
    matrix = np.asarray(matrix, np.float64)
    shape = (a.family.eta_dim, b.family.eta_dim)
    if matrix.shape != shape or not np.all(np.isfinite(matrix)):
        raise ValueError(
            f"coupling {key!r}: A must be a finite {shape[0]}x{shape[1]} matrix (rows: "
            f"'{key[0]}' statistics {list(a.family.flat_names)}, columns: '{key[1]}' "
            f"statistics {list(b.family.flat_names)}); got shape {matrix.shape}")
    la, lb = a.family.flat_names, b.family.flat_names
    return [(matrix[r, c], (a[la[r]], b[lb[c]])) for r, c in zip(*np.nonzero(matrix),
                                                                  strict=True)]


class Model:
    """Build a CAVI model in Python, term by term:

        m = Model()
        mu = m.factor("mu", Gaussian(), eta0=[0.0, -0.005])
        z = m.factor("z", PoissonLogNormal(), eta0=np.stack([y, 0 * y, -np.ones_like(y)], 1))
        m.term(1.0, z["x"], mu["x"], tau["x"])    # tau * mu * z_i, for every member i
        m.term(offsets, z["x"], tau["x"])         # a per-member coefficient
        m.term(-0.5 * N, mu["x2"], tau["x"])      # single factors only: one row
        m.term(1.0, z["x"], u["x"][group])        # member i of z with member group[i] of u
        model = m.build()
    """

    def __init__(self):
        self._factors: dict[str, Factor] = {}
        self._terms: list = []

    def factor(self, name: str, family: ExponentialFamily, eta0) -> FactorRef:
        """Add a factor (eta0 (d,)) or a plate (eta0 (N, d)); returns its reference."""
        if name in self._factors:
            raise ValueError(f"factor '{name}': defined twice")
        CAVIModel({name: Factor(family, eta0)})  # validates family and eta0
        self._factors[name] = Factor(family, eta0)
        shape = np.shape(eta0)
        return FactorRef(name, family, shape[0] if len(shape) == 2 else None)

    def term(self, coef, *stats: Stat) -> None:
        """Add coef * prod of the statistics (a number, or one coefficient per term row)."""
        self._terms.append((coef, stats))
        self.build()  # validates the term where it is written

    def product(self, coef, *blocks: Block, form: str | None = None) -> None:
        """Add sum_j coef[j_1, ..., j_k] prod_k T_{block k}[j_k]: an inner product over the
        blocks' components in one call. coef has one axis per block, its length the block's
        size, or a leading axis of term rows (per-member coefficients); one term per
        non-zero entry. With `form` (a name of FORMS: 'trace' for tr(A B) of two symmetric
        blocks in lower-triangle layout, 'bilinear' for a^T M b with M's lower triangle the
        middle block), coef is a number or one per row, times that form's tensor: e.g.
        `m.product(1.0, mu.block('x'), lam.block('x'), z.block('x'), form='bilinear')`
        is mu^T Lambda z_i."""
        if not blocks or not all(isinstance(b, Block) for b in blocks):
            raise ValueError("product: give blocks, factor.block('label'); got "
                             f"{[type(b).__name__ for b in blocks]}")
        coef = np.asarray(coef, np.float64)
        sizes = tuple(len(b.stats) for b in blocks)
        if form is not None:
            tensor = _form(form, sizes, [b.stats[0].factor for b in blocks])
            coef = coef.reshape(coef.shape + (1,) * len(blocks)) * tensor
        if coef.shape[coef.ndim - len(blocks):] != sizes or coef.ndim > len(blocks) + 1:
            raise ValueError(f"product: coef of shape {coef.shape}; allowed: {sizes} or "
                             f"(rows, {', '.join(map(str, sizes))}) for the blocks "
                             f"{[b.stats[0].factor for b in blocks]}")
        entries = coef if coef.ndim == len(blocks) else np.any(coef != 0, 0)
        for j in zip(*np.nonzero(entries), strict=True):
            self.term(coef[(..., *j)], *(b.stats[k] for b, k in zip(blocks, j, strict=True)))

    def build(self) -> CAVIModel:
        """The model as `run_cavi` takes it."""
        return CAVIModel(dict(self._factors), terms=self._terms)


def _side(triangle: int) -> int:
    """p of a lower triangle of p(p+1)/2 entries (0 if the size is no triangle's)."""
    p = int(round((np.sqrt(8 * triangle + 1) - 1) / 2))
    return p if p * (p + 1) // 2 == triangle else 0


def trace_form(p: int) -> np.ndarray:
    """tr(A B) = sum_st F_st tril(A)_s tril(B)_t for symmetric p x p A and B, their lower
    triangles row-major (the layout of a Wishart's x and of x x^T): F diagonal, 1 for a
    diagonal entry, 2 off it."""
    rows, cols = np.tril_indices(p)
    return np.diag(np.where(rows == cols, 1.0, 2.0))


def bilinear_form(p: int) -> np.ndarray:
    """a^T M b = sum F[i, t, j] a_i tril(M)_t b_j for symmetric p x p M: F[i, t, j] = 1 where
    t is the lower-triangle entry of (i, j) or (j, i)."""
    rows, cols = np.tril_indices(p)
    entry = np.zeros((p, p), int)
    entry[rows, cols] = entry[cols, rows] = np.arange(len(rows))
    out = np.zeros((p, len(rows), p))
    i, j = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    out[i, entry, j] = 1.0
    return out


FORMS = {"trace": trace_form, "bilinear": bilinear_form}
"""Products with a known tensor, by name (`Model.product(..., form=NAME)`, YAML `form`)."""


def _form(name, sizes: tuple[int, ...], factors: list[str]) -> np.ndarray:
    """The tensor of form `name` for blocks of `sizes`, or a one-line error."""
    if name not in FORMS:
        raise ValueError(f"product: form {name!r}; allowed: {sorted(FORMS)}")
    p = _side(sizes[0]) if name == "trace" else sizes[0]  # product passes >= 1 block
    tensor = FORMS[name](p) if p else None
    if tensor is None or tensor.shape != sizes:
        need = {"trace": "two blocks of p(p+1)/2 (lower triangles)",
                "bilinear": "blocks of p, p(p+1)/2 and p"}[name]
        raise ValueError(f"product: form {name!r} of blocks of sizes {sizes} ({factors}); "
                         f"allowed: {need}")
    return tensor


def model_from_config(spec: dict[str, Any], arrays: dict[str, Any] | None = None) -> CAVIModel:
    """A model from a config mapping: {factors: {name: {family, eta0}}, terms: [{coef,
    stats: ["z.x", "mu.x", "tau.x"]}], products: [{coef, blocks: ["mu.x", "Lambda.x",
    "z.x"], form: bilinear}], couplings: [{factors: [a, b], A: [[...]]}]}. A statistic or
    block may name an index array, "u.x[group]", and eta0 or coef may name an entry of
    `arrays` (a data array) instead of giving numbers. A product is `Model.product`: its
    coef the whole tensor, or with `form` a number (or one per row) times the form's."""
    arrays = arrays or {}
    if not isinstance(spec, dict) or "factors" not in spec:
        raise ValueError(f"model: expected a mapping with 'factors' (and 'terms' or "
                         f"'couplings'); got {spec!r}")
    unknown = set(spec) - {"factors", "couplings", "terms", "products"}
    if unknown:
        raise ValueError(f"model: unknown key(s) {sorted(unknown)}; allowed: couplings, "
                         "factors, products, terms")
    value = lambda v, where: _array(v, arrays, where)
    m, refs = Model(), {}
    if not isinstance(spec["factors"], dict) or not spec["factors"]:
        raise ValueError(f"model.factors: expected a non-empty mapping; got {spec['factors']!r}")
    for name, entry in spec["factors"].items():
        if not isinstance(entry, dict) or set(entry) != {"family", "eta0"}:
            raise ValueError(f"model.factors.{name}: expected {{family: ..., eta0: [...]}}; "
                             f"got {entry!r}")
        family = build_family(entry["family"], f"model.factors.{name}.family")
        refs[name] = m.factor(name, family, value(entry["eta0"], f"model.factors.{name}.eta0"))
    for n, entry in enumerate(spec.get("terms") or []):
        if not isinstance(entry, dict) or set(entry) != {"coef", "stats"} or not isinstance(
                entry["stats"], list):
            raise ValueError(f"model.terms[{n}]: expected {{coef: number or array name, "
                             f"stats: ['factor.statistic', ...]}}; got {entry!r}")
        stats = [_stat(refs, s, arrays, f"model.terms[{n}].stats") for s in entry["stats"]]
        m.term(value(entry["coef"], f"model.terms[{n}].coef"), *stats)
    for n, entry in enumerate(spec.get("products") or []):
        where = f"model.products[{n}]"
        if not isinstance(entry, dict) or not {"coef", "blocks"} <= set(entry) <= {
                "coef", "blocks", "form"} or not isinstance(entry["blocks"], list):
            raise ValueError(f"{where}: expected {{coef: number, array or array name, blocks: "
                             f"['factor.statistic', ...], form: {' or '.join(FORMS)} "
                             f"(optional)}}; got {entry!r}"[:300])
        blocks = [_stat(refs, b, arrays, f"{where}.blocks", block=True) for b in entry["blocks"]]
        try:
            m.product(value(entry["coef"], f"{where}.coef"), *blocks, form=entry.get("form"))
        except ValueError as error:
            raise ValueError(f"config key '{where}': {error}") from None
    model = m.build()
    couplings = {}
    for n, entry in enumerate(spec.get("couplings") or []):
        pair = entry.get("factors") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or set(entry) != {"factors", "A"} or not (
                isinstance(pair, list) and len(pair) == 2
                and all(isinstance(f, str) and f in refs for f in pair)):
            raise ValueError(f"model.couplings[{n}]: expected {{factors: [a, b], A: [[...]]}} "
                             f"with a and b factor names of {sorted(refs)}; got {entry!r}"[:300])
        couplings[tuple(entry["factors"])] = entry["A"]
    if couplings:
        model = CAVIModel(dict(m._factors), couplings, m._terms)
    return model


def _array(value, arrays: dict, where: str):
    if isinstance(value, str):
        if value not in arrays:
            raise ValueError(f"config key '{where}': {value!r} names no data array; allowed: "
                             f"{sorted(arrays)} or numbers")
        return arrays[value]
    try:
        return np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"config key '{where}': got {value!r}; allowed: numbers or the name "
                         f"of a data array {sorted(arrays)}") from None


def _stat(refs: dict[str, FactorRef], text, arrays: dict, where: str, block: bool = False
          ) -> Stat | Block:
    """The statistic (or, `block`, every component of it) that "factor.label[index]" names."""
    if not isinstance(text, str) or "." not in text:
        raise ValueError(f"config key '{where}': got {text!r}; allowed: 'factor.statistic' or "
                         "'factor.statistic[index array]'")
    body, index = text, None
    if text.endswith("]") and "[" in text:
        body, index = text[:-1].split("[", 1)
    name, label = body.split(".", 1)
    if name not in refs:
        raise ValueError(f"config key '{where}': {text!r} names no factor; allowed: "
                         f"{sorted(refs)}")
    stat = refs[name].block(label) if block else refs[name][label]
    if index is None:
        return stat
    if index not in arrays:
        raise ValueError(f"config key '{where}': index array {index!r} is not a data array; "
                         f"allowed: {sorted(arrays)}")
    return stat[np.asarray(arrays[index])]
