"""A1111's tile grid (modules.images.split_grid / combine_grid, SD upscale's and Poor man's outpainting's tiles):
the tile layout A1111 scripts index, an untouched grid put back gives the same image, and an overlap fades from one
tile into the next instead of showing a seam."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules import images


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_layout_spreads_tiles_edge_to_edge():
    grid = images.split_grid(_noise(128, 96), tile_w=64, tile_h=64, overlap=16)
    assert (grid.tile_w, grid.tile_h, grid.image_w, grid.image_h, grid.overlap) == (64, 64, 128, 96, 16)
    assert [y for y, _h, _row in grid.tiles] == [0, 32]
    assert [[x for x, _w, _im in row] for _y, _h, row in grid.tiles] == [[0, 32, 64]] * 2
    assert all(tile[2].size == (64, 64) for _y, _h, row in grid.tiles for tile in row)


def test_untouched_grid_combines_to_the_same_image():
    image = _noise(200, 136, seed=3)
    assert np.array_equal(np.asarray(images.combine_grid(images.split_grid(image, 64, 64, 24))), np.asarray(image))


def test_small_image_is_one_tile_cropped_back():
    image = _noise(40, 30)
    grid = images.split_grid(image, 64, 64, 16)
    assert len(grid.tiles) == 1 and len(grid.tiles[0][2]) == 1
    assert np.array_equal(np.asarray(images.combine_grid(grid)), np.asarray(image))


def test_overlap_fades_between_tiles():
    grid = images.split_grid(Image.new("RGB", (112, 64)), 64, 64, 16)   # tiles at x = 0 and 48
    (_y, _h, row), = grid.tiles
    row[0][2] = Image.new("RGB", (64, 64), (0, 0, 0))
    row[1][2] = Image.new("RGB", (64, 64), (255, 255, 255))
    red = np.asarray(images.combine_grid(grid))[10, :, 0].astype(int)
    assert red[:48].max() == 0 and red[64:].min() == 255                 # each tile's own part
    fade = red[48:64]
    assert fade[0] == 0 and fade[-1] == 255 and np.all(np.diff(fade) >= 0) and 0 < fade[8] < 255


def test_overlap_not_smaller_than_tile_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        images.split_grid(_noise(128, 128), 64, 64, 64)
