"""Versions of the stack, recorded in every file bayes_et writes."""

from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("bayes-et", "jax", "jaxlib", "equinox", "optax", "blackjax", "diffrax", "numpy")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
