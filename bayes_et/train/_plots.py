"""Figures of a training run: learning curves and calibration (reliability and PIT)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bayes_et._files import save_figure  # noqa: E402


def plot_learning_curves(history: list[dict], path: Path) -> Path:
    """Training NLL, validation NLL and KL per point against epoch, stages shaded."""
    fig, (ax_nll, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [row["epoch"] for row in history]
    ax_nll.plot(epochs, [row["train_nll"] for row in history], label="train NLL")
    ax_nll.plot(epochs, [row["val_nll"] for row in history], label="validation NLL (predictive)")
    ax_kl.plot(epochs, [row["train_kl"] for row in history], color="C2")
    starts = [row for i, row in enumerate(history)
              if i == 0 or row["stage_index"] != history[i - 1]["stage_index"]]
    for ax in (ax_nll, ax_kl):
        for row in starts:
            ax.axvline(row["epoch"], color="0.6", lw=0.8, ls="--")
            ax.annotate(row["stage"], (row["epoch"], 1), xycoords=("data", "axes fraction"),
                        va="top", fontsize=8, color="0.4")
        ax.set_xlabel("epoch")
    ax_nll.set_ylabel("NLL per point (standardised units)")
    ax_nll.legend(fontsize=8)
    ax_kl.set_ylabel("KL(q || prior) / N")
    ax_kl.set_yscale("log")
    return save_figure(fig, path)


def plot_calibration(metrics: dict, path: Path, title: str = "") -> Path:
    """Reliability diagram (observed vs nominal interval coverage) and PIT histogram."""
    fig, (ax_rel, ax_pit) = plt.subplots(1, 2, figsize=(9, 3.8))
    nominal, observed = zip(*metrics["reliability"], strict=True)
    ax_rel.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="ideal")
    ax_rel.plot(nominal, observed, "o-", ms=3, label="predictive")
    ax_rel.set(xlabel="nominal central-interval coverage", ylabel="observed coverage",
               xlim=(0, 1), ylim=(0, 1), title=f"mean z² = {metrics['mean_z2']:.2f}")
    ax_rel.legend(fontsize=8)
    pit = metrics["pit_histogram"]
    ax_pit.bar([(i + 0.5) / len(pit) for i in range(len(pit))], pit, width=1 / len(pit),
               edgecolor="white")
    ax_pit.axhline(1 / len(pit), color="0.4", ls="--", lw=1)
    ax_pit.set(xlabel="PIT = Φ(z)", ylabel="fraction", xlim=(0, 1), title="PIT histogram")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
