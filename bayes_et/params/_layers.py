"""Bayesian layers built from parameters."""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractParameter
from ._gaussian import GaussianParameter
from ._make import make_parameter


def parameter_value(p: AbstractParameter, key: PRNGKeyArray | None, sample: bool) -> Array:
    """The mean of `p`, or one draw when `sample` (then `key` is required)."""
    if not sample:
        return p.mean
    if key is None:
        raise ValueError("sample=True needs a PRNG key: pass key=jax.random.key(...)")
    return p.sample(key)


class BayesianLinear(eqx.Module):
    """y = W x + b with parameter-valued W (out, in) and b (out,).

    Called as ``layer(x, *, key=None, sample=True)`` on x of shape (..., in_features).
    With `sample=True` one weight draw is shared by all rows of x; with
    `local_reparam=True` (Gaussian weights) each row gets its own noise through the
    pre-activation: mean ``x @ mu.T``, variance ``x**2 @ sigma.T**2``.
    """

    weight: AbstractParameter
    bias: AbstractParameter | None
    in_features: int = eqx.field(static=True)
    out_features: int = eqx.field(static=True)
    local_reparam: bool = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        key: PRNGKeyArray,
        use_bias: bool = True,
        bayesian: bool = True,
        bayesian_bias: bool = True,
        param_type: type[AbstractParameter] = GaussianParameter,
        init_stdv: float = 1e-2,
        local_reparam: bool = False,
    ):
        for field, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BayesianLinear.{field} must be a positive int; got {value!r}")
        if local_reparam and not (bayesian and param_type is GaussianParameter):
            raise ValueError("local_reparam=True needs bayesian=True and GaussianParameter weights")
        wkey, bkey = jax.random.split(key)
        bound = 1.0 / math.sqrt(in_features)
        w = jax.random.uniform(wkey, (out_features, in_features), minval=-bound, maxval=bound)
        self.weight = make_parameter(
            w, bayesian=bayesian, param_type=param_type, init_stdv=init_stdv
        )
        if use_bias:
            b = jax.random.uniform(bkey, (out_features,), minval=-bound, maxval=bound)
            self.bias = make_parameter(
                b, bayesian=bayesian and bayesian_bias, param_type=param_type, init_stdv=init_stdv
            )
        else:
            self.bias = None
        self.in_features, self.out_features = in_features, out_features
        self.local_reparam = local_reparam

    def __call__(
        self, x: Float[Array, "... in"], *, key: PRNGKeyArray | None = None, sample: bool = True
    ) -> Float[Array, "... out"]:
        if jnp.shape(x)[-1:] != (self.in_features,):
            raise ValueError(
                f"BayesianLinear expects x of shape (..., {self.in_features}); got {jnp.shape(x)}"
            )
        if sample and key is None:
            raise ValueError(
                "BayesianLinear: sample=True needs key=...; pass sample=False for the mean"
            )
        wkey, bkey = jax.random.split(key) if sample else (None, None)
        bias = 0.0 if self.bias is None else parameter_value(self.bias, bkey, sample)
        if sample and self.local_reparam:
            w = self.weight
            mean = x @ w.mean.T
            std = jnp.sqrt(x**2 @ (w.stdv**2).T)
            return mean + std * jax.random.normal(wkey, mean.shape, mean.dtype) + bias
        return x @ parameter_value(self.weight, wkey, sample).T + bias


class BayesianMLP(eqx.Module):
    """A stack of BayesianLinear layers with an activation between them."""

    layers: tuple[BayesianLinear, ...]
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation: Callable = jax.nn.tanh,
        **layer_kwargs,
    ):
        sizes = [in_size] + [width] * depth + [out_size]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            BayesianLinear(a, b, key=k, **layer_kwargs)
            for a, b, k in zip(sizes[:-1], sizes[1:], keys, strict=True)
        )
        self.activation = activation

    def __call__(self, x, *, key: PRNGKeyArray | None = None, sample: bool = True):
        keys = jax.random.split(key, len(self.layers)) if sample and key is not None else None
        for i, layer in enumerate(self.layers):
            x = layer(x, key=None if keys is None else keys[i], sample=sample)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x
