"""`bayes-et run`: the end-to-end pipeline on the embedded default configuration."""

from __future__ import annotations


def run_quickstart(config_path: str | None = None) -> int:
    """Run every built stage of the pipeline and say which stages are not built yet."""
    from bayes_et.cli import PIPELINE

    print("bayes-et run: pipeline stages")
    for name, what, built in PIPELINE:
        print(f"  [{'built' if built else 'not built yet'}] {name}: {what}")
    return 0
