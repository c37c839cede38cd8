"""bayes_et: learned exponential-family moment maps with calibrated uncertainty, for CAVI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayes-et")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
