"""The Wishart family on symmetric positive-definite d x d matrices (closed form)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import multigammaln

from ._family import MAX_DIM, ExponentialFamily
from ._supports import PositiveDefinite


class Wishart(ExponentialFamily):
    """W(nu, V) on SPD d x d matrices: |x|^((nu - d - 1)/2) exp(-tr(V^-1 x) / 2), with
    T = [log|x|, tril(x)] (the lower triangle, row-major, numpy.tril_indices(d)). So
    eta_logdet = (nu - d - 1) / 2 > -1 and eta_x . tril(x) = tr(B x) with B = -V^-1 / 2
    symmetric negative definite, eta_x = B_ii on the diagonal and 2 B_ij off it. The
    precision of a Gaussian under a conjugate Wishart prior; E[x] = nu V,
    E[log|x|] = psi_d(nu / 2) + d log 2 + log|V|, both from the closed log-partition."""

    def __init__(self, d: int = 2):
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM:
            raise ValueError(f"Wishart: d must be an int in [1, {MAX_DIM}]; got {d!r}")
        self.d = d

    @property
    def x_shape(self):
        """(d, d): one matrix."""
        return (self.d, self.d)

    @property
    def support(self):
        """PositiveDefinite(d): x = L L^T from d (d + 1) / 2 unconstrained numbers."""
        return PositiveDefinite(self.d)

    @property
    def stat_shapes(self):
        """logdet: (), x: (d (d + 1) / 2,) (the lower triangle of x, row-major)."""
        return {"logdet": (), "x": (self.d * (self.d + 1) // 2,)}

    @property
    def eta_box(self):
        """Default box: eta_logdet in [0, 5]; eta_x in [-3, -1] on the diagonal and
        +-1/d off it (negative definite by Gershgorin)."""
        rows, cols = np.tril_indices(self.d)
        diag = rows == cols
        return {"logdet": (0.0, 5.0),
                "x": (np.where(diag, -3.0, -1.0 / self.d), np.where(diag, -1.0, 1.0 / self.d))}

    def _compute_stats(self, x):
        return {"logdet": jnp.linalg.slogdet(x)[1], "x": x[jnp.tril_indices(self.d)]}

    def half_inverse_scale(self, eta_x):
        """B = -V^-1 / 2 (d, d) from the flat tril natural parameters."""
        rows, cols = np.tril_indices(self.d)
        halved = jnp.where(rows == cols, eta_x, eta_x / 2)
        lower = jnp.zeros(eta_x.shape[:-1] + (self.d, self.d)).at[..., rows, cols].set(halved)
        return lower + jnp.swapaxes(lower, -1, -2) - lower * jnp.eye(self.d)

    def eta_constraints(self, eta):
        top = jnp.linalg.eigvalsh(self.half_inverse_scale(eta["x"]))[..., -1]
        return {"eta['logdet'] > -1 (nu > d - 1)": eta["logdet"] > -1,
                "B from eta['x'] is negative definite": top < 0}

    def _log_partition(self, eta):
        nu = 2 * eta[0] + self.d + 1
        log_det_v = -jnp.linalg.slogdet(-2 * self.half_inverse_scale(eta[1:]))[1]
        return 0.5 * nu * (log_det_v + self.d * math.log(2.0)) + multigammaln(0.5 * nu, self.d)
