"""Utilities over any pytree holding parameters: discovery, freezing, sampling, entropy, KL."""

from __future__ import annotations

from collections.abc import Iterable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._base import AbstractParameter, AbstractPrior
from ._deterministic import DeterministicParameter
from ._gaussian import GaussianParameter
from ._laplacian import LaplacianParameter


def is_parameter(node) -> bool:
    """Whether a pytree node is a variational parameter (an AbstractParameter)."""
    return isinstance(node, AbstractParameter)


def _path_name(path) -> str:
    return jax.tree_util.keystr(tuple(path)).lstrip(".")


def _parameters_with_paths(model: PyTree) -> list[tuple[tuple, AbstractParameter]]:
    leaves = jax.tree_util.tree_flatten_with_path(model, is_leaf=is_parameter)[0]
    return [(path, leaf) for path, leaf in leaves if is_parameter(leaf)]


def get_parameters(model: PyTree) -> dict[str, AbstractParameter]:
    """All parameters in `model`, keyed by pytree path (e.g. ``layers[0].weight``)."""
    return {_path_name(path): p for path, p in _parameters_with_paths(model)}


def get_parameter_groups(model: PyTree, *, by: str = "module") -> dict[str, tuple[str, ...]]:
    """Parameter names grouped by owning module path (`by="module"`), by kind
    (`by="kind"`: gaussian / laplacian / deterministic / ...), or one each (`by="parameter"`)."""
    if by not in ("module", "kind", "parameter"):
        raise ValueError(f"by must be 'module', 'kind' or 'parameter'; got {by!r}")
    groups: dict[str, list[str]] = {}
    for path, p in _parameters_with_paths(model):
        name = _path_name(path)
        if by == "parameter":
            key = name
        elif by == "kind":
            key = type(p).__name__.removesuffix("Parameter").lower()
        else:
            key = _path_name(path[:-1]) or "<root>"
        groups.setdefault(key, []).append(name)
    return {k: tuple(v) for k, v in groups.items()}


def _map_parameters(fn, model: PyTree, other: PyTree = False) -> PyTree:
    """Apply `fn(name, param)` to each parameter; every other leaf becomes `other`."""
    names = iter(get_parameters(model))
    return jax.tree_util.tree_map(
        lambda node: fn(next(names), node) if is_parameter(node) else other,
        model,
        is_leaf=is_parameter,
    )


def trainable_filter(
    model: PyTree, *, means: bool = True, widths: bool = True, exclude: Iterable[str] = ()
) -> PyTree:
    """Boolean filter spec: True on parameter mean / width leaves that train.

    Non-parameter leaves (buffers such as standardisation statistics) are always False;
    parameters named in `exclude` are frozen entirely.
    """
    exclude = set(exclude)

    def spec(name: str, p: AbstractParameter):
        flags = jax.tree_util.tree_map(lambda _: False, p)
        if name in exclude:
            return flags
        flags = eqx.tree_at(lambda q: q.mean, flags, means)
        if p.width_field is not None:
            flags = eqx.tree_at(lambda q: getattr(q, p.width_field), flags, widths)
        return flags

    return _map_parameters(spec, model)


def freeze_stdvs(model: PyTree) -> tuple[PyTree, PyTree]:
    """(dynamic, static) with only the means trainable (MAP stage)."""
    return eqx.partition(model, trainable_filter(model, widths=False))


def freeze_means(model: PyTree) -> tuple[PyTree, PyTree]:
    """(dynamic, static) with only the widths trainable (VI stage)."""
    return eqx.partition(model, trainable_filter(model, means=False))


def freeze_params(model: PyTree, names: Iterable[str]) -> tuple[PyTree, PyTree]:
    """(dynamic, static) with the named parameters frozen and all others trainable."""
    names = [names] if isinstance(names, str) else list(names)
    known = get_parameters(model)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"freeze_params: unknown parameter names {unknown}; known: {list(known)}")
    return eqx.partition(model, trainable_filter(model, exclude=names))


def unfreeze_all(dynamic: PyTree, static: PyTree) -> PyTree:
    """Recombine a (dynamic, static) partition into the full model."""
    return eqx.combine(dynamic, static)


def sample_all_parameters(model: PyTree, key: PRNGKeyArray) -> PyTree:
    """A copy of `model` whose parameters hold one draw each (as DeterministicParameter).

    The parameters of one kind (and dtype) share one draw of their standard noise, split
    among them (one random call per kind: the program compiles several times faster than
    with a call per parameter); `jax.vmap` over keys gives a batch of models.
    """
    leaves, treedef = jax.tree_util.tree_flatten(model, is_leaf=is_parameter)
    groups: dict[tuple, list[int]] = {}
    for i, leaf in enumerate(leaves):
        if is_parameter(leaf) and leaf.noise is not None:
            groups.setdefault((leaf.noise, jnp.result_type(leaf.mean)), []).append(i)
    drawn = {}
    for g, ((noise, dtype), members) in enumerate(groups.items()):
        sizes = [leaves[i].mean.size for i in members]
        flat = noise(jax.random.fold_in(key, g), (sum(sizes),), dtype)
        for i, chunk in zip(members, jnp.split(flat, np.cumsum(sizes)[:-1]), strict=True):
            drawn[i] = leaves[i].at_noise(chunk.reshape(leaves[i].shape))
    own = jax.random.fold_in(key, len(groups))  # a kind without standard noise samples itself
    return jax.tree_util.tree_unflatten(treedef, [
        DeterministicParameter(drawn[i] if i in drawn else
                               leaf.sample(jax.random.fold_in(own, i)))
        if is_parameter(leaf) else leaf for i, leaf in enumerate(leaves)])


def _sum_over(model: PyTree, kinds: tuple[type, ...], fn) -> Float[Array, ""]:
    terms = [fn(p) for p in get_parameters(model).values() if isinstance(p, kinds)]
    return sum(terms, jnp.zeros(()))


def gaussian_entropy(model: PyTree) -> Float[Array, ""]:
    """Total entropy of the Gaussian parameters."""
    return _sum_over(model, (GaussianParameter,), lambda p: p.entropy())


def laplacian_entropy(model: PyTree) -> Float[Array, ""]:
    """Total entropy of the Laplacian parameters."""
    return _sum_over(model, (LaplacianParameter,), lambda p: p.entropy())


def entropy(model: PyTree) -> Float[Array, ""]:
    """Total entropy of all parameters (point masses contribute 0)."""
    return _sum_over(model, (AbstractParameter,), lambda p: p.entropy())


def kl_divergence(
    model: PyTree, prior: AbstractPrior, *, key: PRNGKeyArray | None = None
) -> Float[Array, ""]:
    """Sum of KL(q_p || prior_p) over parameters; `prior.prior_for(name)` picks each prior.

    `key` is only needed where some pair has no closed form (Monte Carlo)."""
    total = jnp.zeros(())
    for i, (name, p) in enumerate(get_parameters(model).items()):
        sub_key = None if key is None else jax.random.fold_in(key, i)
        total = total + p.kl(prior.prior_for(name), key=sub_key)
    return total


def flatten_means(model: PyTree) -> Float[Array, " n"]:
    """All parameter means concatenated in `get_parameters` order."""
    return _flatten(p.mean for p in get_parameters(model).values())


def flatten_stdvs(model: PyTree) -> Float[Array, " n"]:
    """All parameter widths concatenated (0 for deterministic parameters)."""
    return _flatten(p.width for p in get_parameters(model).values())


def _flatten(arrays) -> Array:
    arrays = [jnp.ravel(a) for a in arrays]
    return jnp.concatenate(arrays) if arrays else jnp.zeros((0,))


def get_parameter_count(model: PyTree) -> dict[str, int]:
    """Scalar counts: {"total", "bayesian", "deterministic"}."""
    counts = {"total": 0, "bayesian": 0, "deterministic": 0}
    for p in get_parameters(model).values():
        size = int(jnp.size(p.mean))
        counts["total"] += size
        counts["deterministic" if p.width_field is None else "bayesian"] += size
    return counts
