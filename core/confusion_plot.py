"""The confusion-matrix figure, drawn the same way for a report's plots (worker.render.plots) and for SER
training (models.ser.report): cells coloured by the share of their row, annotated with counts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CMAP = "Blues"


MAX_TICK_CHARS = 24  # a longer class name is cut (with an ellipsis) where it labels a tick: the axes keep their room


def literal_text(value: Any, limit: int = MAX_TICK_CHARS) -> str:
    """A user-supplied string (a gold label) drawn literally (no mathtext), at most `limit` characters."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "\u2026"
    return text.replace("$", r"\$")


def row_normalised(counts: Sequence[Sequence[int]]) -> list[list[float]]:
    """Each count divided by its row's total (0 for an empty row)."""
    return [[(c / sum(row) if sum(row) else 0.0) for c in row] for row in counts]


def draw_confusion(
    fig: Figure, classes: Sequence[str], counts: Sequence[Sequence[int]], title: str, row_label: str, col_label: str
) -> None:
    normalised = row_normalised(counts)
    ax = fig.add_subplot()
    k = len(classes)
    image = ax.imshow(normalised, cmap=CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(k), labels=[literal_text(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(k), labels=[literal_text(c) for c in classes])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            if counts[i][j]:
                ax.text(
                    j,
                    i,
                    str(counts[i][j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if normalised[i][j] > 0.5 else "black",
                )
    fig.colorbar(image, ax=ax, label="share of row", shrink=0.8)


def save_confusion_png(
    counts: Sequence[Sequence[int]],
    classes: Sequence[str],
    title: str,
    path: Path,
    *,
    row_label: str = "gold",
    col_label: str = "predicted",
    dpi: int = 110,
) -> Path:
    counts = [[int(c) for c in row] for row in counts]
    fig = Figure(figsize=(5.8, 5.0), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    draw_confusion(fig, classes, counts, title, row_label, col_label)
    fig.savefig(path, dpi=dpi)
    return Path(path)
