import sys
from pathlib import Path

import jax

# Benchmarks double as experiment modules for a few tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

jax.config.update("jax_platforms", "cpu")
