"""Natural-gradient preconditioning for mean-field variational parameters (an optax transform)."""

from __future__ import annotations

import jax
import optax

from ._gaussian import GaussianParameter
from ._laplacian import LaplacianParameter
from ._tree import is_parameter

# Fisher information of q per unit, for the location and for the width:
# Gaussian N(m, s^2): F_m = 1/s^2, F_s = 2/s^2.  Laplace(m, b): F_m = 1/b^2, F_b = 1/b^2.
_WIDTH_FISHER_FACTOR = {GaussianParameter: 2.0, LaplacianParameter: 1.0}


def natural_gradient(damping: float = 0.0) -> optax.GradientTransformation:
    """Precondition gradients by the inverse mean-field Fisher of each parameter's q.

    `update` needs `params`: the full model (``eqx.combine(dynamic, static)``), so widths
    that are frozen in this stage are still known. Gradients of point masses and of
    non-parameter leaves pass unchanged. Chain it before a plain optimiser, e.g.
    ``optax.chain(natural_gradient(), optax.sgd(lr))``.
    """
    if damping < 0:
        raise ValueError(f"natural_gradient: damping must be >= 0; got {damping}")

    def init_fn(params):
        return optax.EmptyState()

    def precondition(grad, param):
        factor = _WIDTH_FISHER_FACTOR.get(type(param))
        if factor is None or not is_parameter(grad):
            return grad
        width = param.width
        fisher_mean = 1.0 / width**2 + damping
        # d width / d raw = sigmoid(raw) for the softplus bijection.
        slope = jax.nn.sigmoid(getattr(param, param.width_field))
        fisher_raw = factor * slope**2 / width**2 + damping
        raw_grad = getattr(grad, param.width_field)
        return type(param)(
            None if grad.mean is None else grad.mean / fisher_mean,
            None if raw_grad is None else raw_grad / fisher_raw,
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("natural_gradient needs params (the full model) in update()")
        updates = jax.tree_util.tree_map(
            precondition, updates, params, is_leaf=lambda x: x is None or is_parameter(x)
        )
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)
