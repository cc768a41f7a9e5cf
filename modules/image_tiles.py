"""A1111's tile grid (`images.Grid`, `images.split_grid`, `images.combine_grid`): an image cut into overlapping tiles
of one size, each tile worked on (SD upscale img2img's every tile, Poor man's outpainting the border tiles) and the
tiles put back together, each overlap blended with a linear ramp so that no seam shows.

`Grid.tiles` is A1111's layout, which scripts index by position: a list of rows `[y, h, row]`, each row a list of
tiles `[x, w, image]`; a script replaces `tile[2]` with its result before combine_grid.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from PIL import Image

Grid = namedtuple("Grid", ["tiles", "tile_w", "tile_h", "image_w", "image_h", "overlap"])


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side begin: evenly spread so that the first starts at 0 and the last ends at the
    edge, with at least `overlap` pixels shared by neighbours."""
    if tile <= overlap:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile size ({tile})")
    count = max(1, math.ceil((length - overlap) / (tile - overlap)))
    if count == 1:
        return [0]
    step = (length - tile) / (count - 1)
    return [min(int(i * step), max(0, length - tile)) for i in range(count)]


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> Grid:
    """`image` as rows of tile_w × tile_h tiles that overlap by at least `overlap` pixels (a side shorter than a tile
    gives one tile, padded with black, which combine_grid crops away again)."""
    w, h = image.size
    rows = []
    for y in _starts(h, tile_h, overlap):
        row = [[x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))] for x in _starts(w, tile_w, overlap)]
        rows.append([y, tile_h, row])
    return Grid(rows, tile_w, tile_h, w, h, overlap)


def _ramp(length: int, overlap: int, horizontal: bool) -> Image.Image:
    """An 'L' mask `overlap` wide rising from 0 to 255, the rest of its `length` (the tile's other side) alike."""
    ramp = np.linspace(0, 255, num=max(overlap, 1), dtype=np.float32).astype(np.uint8)
    block = np.tile(ramp, (length, 1)) if horizontal else np.tile(ramp[:, None], (1, length))
    return Image.fromarray(block, mode="L")


def combine_grid(grid: Grid) -> Image.Image:
    """The tiles of `grid` (as the script left them in `tile[2]`) put back into one image of the original size.
    Each tile covers its left (upper) neighbour from its own start; across the first `overlap` pixels it fades in."""
    overlap = grid.overlap
    mask_w = _ramp(grid.tile_h, overlap, horizontal=True)
    mask_h = _ramp(grid.image_w, overlap, horizontal=False)
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for i, (y, h, row) in enumerate(grid.tiles):
        strip = Image.new("RGB", (grid.image_w, h))
        for j, (x, w, tile) in enumerate(row):
            tile = tile.convert("RGB")
            if tile.size != (w, h):
                tile = tile.resize((w, h), Image.Resampling.LANCZOS)
            if j == 0 or overlap <= 0:
                strip.paste(tile, (x, 0))
                continue
            strip.paste(tile.crop((0, 0, overlap, h)), (x, 0), mask=mask_w.crop((0, 0, overlap, h)))
            strip.paste(tile.crop((overlap, 0, w, h)), (x + overlap, 0))
        if i == 0 or overlap <= 0:
            combined.paste(strip, (0, y))
            continue
        combined.paste(strip.crop((0, 0, grid.image_w, overlap)), (0, y), mask=mask_h)
        combined.paste(strip.crop((0, overlap, grid.image_w, h)), (0, y + overlap))
    return combined
