"""Plots (matplotlib, headless): accuracy heatmaps over test height × width, and curves."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fcn_jax.outputs import write_atomic  # noqa: E402
from fcn_jax.sizes import parse_size  # noqa: E402


def save_figure(fig, path: str) -> None:
    """Save a figure as PNG atomically, then close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def draw_heatmap(
    ax, eval_accuracy: dict[str, float], title: str, *, cmap="viridis", vmin=0, vmax=1
):
    heights, widths, grid = accuracy_grid(eval_accuracy)
    image = ax.imshow(grid, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(widths)), widths)
    ax.set_yticks(range(len(heights)), heights)
    ax.set_xlabel("test width")
    ax.set_ylabel("test height")
    ax.set_title(title)
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=8)
    return image


def heatmap(eval_accuracy: dict[str, float], path: str, title: str = "test accuracy") -> None:
    """Accuracy over test height × width (keys like ``"28x16"``) as a PNG."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    fig.colorbar(draw_heatmap(ax, eval_accuracy, title), ax=ax)
    save_figure(fig, path)


def accuracy_grid(eval_accuracy: dict[str, float]) -> tuple[list[int], list[int], np.ndarray]:
    """``{"HxW": acc}`` → (heights, widths, (len(heights), len(widths)) array, NaN where the
    pair was not tested)."""
    sizes = [parse_size(k) for k in eval_accuracy]
    heights = sorted({s[0] for s in sizes})
    widths = sorted({s[1] for s in sizes})
    grid = np.full((len(heights), len(widths)), np.nan)
    for key, (h, w) in zip(eval_accuracy, sizes):
        grid[heights.index(h), widths.index(w)] = eval_accuracy[key]
    return heights, widths, grid
