"""The `derive train --plot` figure: loss curves, accuracy curves, test confusion matrix.

Built on `matplotlib.figure.Figure` with the Agg canvas directly, never `pyplot`: no global figure
state, no GUI backend picked from the environment (so no display warnings in headless CI, where
the tests run with warnings as errors), and nothing left open between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from derive.train.data import IntArray

if TYPE_CHECKING:
    from derive.train.objective import EpochRecord

# NOTE: past this many classes, per-cell counts are unreadable; the colours still show the pattern.
MAX_ANNOTATED_CLASSES = 20


def plot_training(
    path: Path,
    history: Sequence[EpochRecord],
    confusion: IntArray,
    classes: Sequence[str],
    title: str,
    xlabel: str = "epoch",
    reference_acc: float | None = None,
) -> None:
    """Write a three-panel PNG (or any format matplotlib infers from `path`'s suffix).

    Left: train and test mean cross-entropy per step; middle: train and test accuracy; right:
    the test confusion matrix, rows = true class, with counts in the cells. `reference_acc`
    (scikit-learn's test accuracy under `--compare-sklearn`) is drawn as a dashed line, the
    target the curves should reach.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r.step for r in history]
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc, ax_cm = fig.subplots(1, 3, width_ratios=[1, 1, 1.05])

    marker = "o" if len(steps) <= 30 else None
    ax_loss.plot(steps, [r.train_loss for r in history], marker=marker, label="train")
    ax_loss.plot(steps, [r.test_loss for r in history], marker=marker, label="test")
    ax_loss.set(xlabel=xlabel, ylabel="mean cross-entropy", title="loss")
    if (
        steps
        and max(r.train_loss for r in history) / max(min(r.train_loss for r in history), 1e-300)
        > 20
    ):
        ax_loss.set_yscale("log")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend()

    ax_acc.plot(steps, [r.train_acc for r in history], marker=marker, label="train")
    ax_acc.plot(steps, [r.test_acc for r in history], marker=marker, label="test")
    if reference_acc is not None:
        ax_acc.axhline(reference_acc, color="gray", linestyle="--", label="sklearn test")
    ax_acc.set(xlabel=xlabel, ylabel="accuracy", title="accuracy")
    ax_acc.grid(True, alpha=0.3)
    ax_acc.legend(loc="lower right")

    k = len(classes)
    image = ax_cm.imshow(confusion, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax_cm, shrink=0.85)
    ax_cm.set(
        xlabel="predicted",
        ylabel="true",
        title=f"test confusion matrix (n={int(confusion.sum())})",
        xticks=np.arange(k),
        yticks=np.arange(k),
    )
    ax_cm.set_xticklabels(classes, rotation=45 if max(map(len, classes), default=0) > 2 else 0)
    ax_cm.set_yticklabels(classes)
    if k <= MAX_ANNOTATED_CLASSES:
        threshold = confusion.max() / 2 if confusion.size else 0
        for i in range(k):
            for j in range(k):
                count = int(confusion[i, j])
                if count:
                    color = "white" if count > threshold else "black"
                    ax_cm.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)

    fig.suptitle(title)
    fig.savefig(path, dpi=100)
