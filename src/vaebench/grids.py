"""The image grids the train stage logs to MLflow and the evaluate stage writes as PNGs: one row order, one
layout, one rounding to pixels (torchvision's ``make_grid`` and ``save_image``, written here so that the stages do
not import torchvision)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def interleave_rows(groups: Sequence[torch.Tensor], per_row: int) -> torch.Tensor:
    """Rows of ``per_row`` images taken in turn from each group: row 1 of every group, then row 2, ... (test images
    above their reconstructions; a video's true frames above its reconstruction and samples, one video per row
    when ``per_row`` is its number of frames).

    Args:
        groups: tensors of equal shape (N, C, H, W).
        per_row: images per row, >= 1.
    Returns:
        (len(groups) N, C, H, W), for a grid of ``per_row`` images per row.
    Raises:
        ValueError: no groups, groups of different shapes, or per_row < 1.
    """
    if not groups or per_row < 1 or any(g.shape != groups[0].shape for g in groups):
        raise ValueError(f"interleave_rows: expected groups of one shape and per_row >= 1, got shapes "
                         f"{[tuple(g.shape) for g in groups]} and per_row {per_row!r}")
    return torch.cat([g[r:r + per_row] for r in range(0, len(groups[0]), per_row) for g in groups])


@torch.no_grad()
def grid_image(images: torch.Tensor, nrow: int, padding: int = 2) -> torch.Tensor:
    """``images`` (N, C, H, W) float in [0, 1], C = 1 or 3, laid out ``nrow`` per row on a black background with
    ``padding`` pixels between and around them (a single image unframed): (3, H', W') float, the tensor
    torchvision's ``make_grid(images, nrow, padding)`` returns. Raises ValueError for another shape."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"grid_image: expected (N, 1 or 3, H, W) images, got {tuple(images.shape)}")
    n, c, h, w = images.shape
    images = images.expand(n, 3, h, w) if c == 1 else images
    if n == 1:
        return images[0].clone()
    ncol = min(nrow, n)
    nrows = int(math.ceil(n / ncol))
    grid = images.new_zeros(3, nrows * (h + padding) + padding, ncol * (w + padding) + padding)
    for i in range(n):
        top, left = (i // ncol) * (h + padding) + padding, (i % ncol) * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def grid_pixels(grid: torch.Tensor):
    """A (3, H, W) float image in [0, 1] -> (H, W, 3) uint8 numpy pixels, rounded as torchvision's ``save_image``
    rounds them."""
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()


def save_grid_png(images: torch.Tensor, nrow: int, path, padding: int = 2) -> None:
    """Write ``images`` (N, C, H, W) float in [0, 1], C = 1 or 3, as one PNG of :func:`grid_image`: the pixels
    torchvision's ``make_grid(images, nrow, padding)`` and ``save_image`` write. Raises ValueError for another
    shape."""
    from PIL import Image

    Image.fromarray(grid_pixels(grid_image(images, nrow, padding))).save(path, format="png")
