import gc
import sys
from pathlib import Path

import jax
import pytest

# Benchmarks double as experiment modules for a few tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

jax.config.update("jax_platforms", "cpu")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop each module's compiled programs after it, so that the session does not hold
    every executable it ever built (a clean-clone run once segfaulted inside XLA
    compilation near the end of the suite; the same tests alone pass)."""
    yield
    jax.clear_caches()
    gc.collect()
