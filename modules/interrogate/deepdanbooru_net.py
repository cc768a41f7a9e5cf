"""The DeepDanbooru tagger network (KichangKim's resnet_custom_v3) under the key names of A1111's torch port.

No library provides this network: the Keras original is TensorFlow, and the file A1111 users have
(`model-resnet_custom_v3.pt`, from AUTOMATIC1111/TorchDeepDanbooru) is a flat state dict of 179 convolutions named
`n_Conv_0` … `n_Conv_178` (batch norm folded into their biases) plus a `tags` list. So the network is written here,
as a loop over its stages, naming each convolution as that file does.

Shape facts (read from the file's layout): a 7×7/2 stem and a 3×3/2 max pool, then six stages of bottleneck blocks
(1×1 → 3×3 → 1×1, identity shortcut; the first block of a stage has a 1×1 projection shortcut with the stage's
stride). TensorFlow "same" padding is reproduced by hand: 3×3 convolutions get one pixel on each side at stride 1,
and one pixel on the right and bottom only at stride 2; the stem gets 2 left/top and 3 right/bottom; the max pool
pads right/bottom with -inf. The head is a bias-free 1×1 convolution to one channel per tag, a global average and
a sigmoid. Input: N×H×W×3 floats in 0..1 (channels last, as the Keras model took them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Stage:
    width: int             # output channels of every block
    blocks: int            # blocks in the stage, the projecting first block included
    stride: int
    shortcut_first: bool   # whether the file numbers the projection before the three main convolutions


# The real network; a test's tiny copy keeps the block counts (so the key names) and shrinks the widths.
STAGES = (Stage(256, 3, 1, True), Stage(512, 8, 2, True), Stage(1024, 20, 2, True), Stage(1024, 20, 2, False),
          Stage(2048, 3, 2, True), Stage(4096, 3, 2, True))
STEM_WIDTH = 64


@dataclass(frozen=True)
class _Block:
    """Indices of one bottleneck block's convolutions in the flat `n_Conv_<i>` numbering."""
    reduce: int
    spatial: int
    expand: int
    shortcut: int | None
    stride: int


class DeepDanbooruNet(nn.Module):
    def __init__(self, n_tags: int, stages: tuple[Stage, ...] = STAGES, stem_width: int = STEM_WIDTH):
        super().__init__()
        self.tags: list[str] = []
        self._blocks: list[_Block] = []
        index = 0

        def conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = True) -> int:
            nonlocal index
            setattr(self, f"n_Conv_{index}", nn.Conv2d(cin, cout, kernel_size=k, stride=stride, bias=bias))
            index += 1
            return index - 1

        conv(3, stem_width, 7, 2)
        channels = stem_width
        for stage in stages:
            mid = stage.width // 4
            for b in range(stage.blocks):
                stride = stage.stride if b == 0 else 1
                shortcut = None
                if b == 0 and stage.shortcut_first:
                    shortcut = conv(channels, stage.width, 1, stride)
                reduce = conv(channels, mid, 1)
                spatial = conv(mid, mid, 3, stride)
                expand = conv(mid, stage.width, 1)
                if b == 0 and not stage.shortcut_first:
                    shortcut = conv(channels, stage.width, 1, stride)
                self._blocks.append(_Block(reduce, spatial, expand, shortcut, stride))
                channels = stage.width
        self._head = conv(channels, n_tags, 1, bias=False)

    def _conv(self, i: int) -> nn.Conv2d:
        return getattr(self, f"n_Conv_{i}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        x = F.relu(self._conv(0)(F.pad(x, [2, 3, 2, 3])))
        x = F.max_pool2d(F.pad(x, [0, 1, 0, 1], value=float("-inf")), kernel_size=3, stride=2)
        for block in self._blocks:
            h = F.relu(self._conv(block.reduce)(x))
            h = F.pad(h, [1, 1, 1, 1] if block.stride == 1 else [0, 1, 0, 1])
            h = F.relu(self._conv(block.spatial)(h))
            h = self._conv(block.expand)(h)
            skip = x if block.shortcut is None else self._conv(block.shortcut)(x)
            x = F.relu(h + skip)
        x = self._conv(self._head)(x)
        return torch.sigmoid(x.mean(dim=(2, 3)))


def stages_from_state_dict(sd: dict[str, torch.Tensor]) -> tuple[tuple[Stage, ...], int, int]:
    """(stages, stem width, tag count) read from a file's shapes, so a smaller network of the same layout (tests)
    loads too. The block counts and the numbering are the real network's; only the widths are taken from the file."""
    stem = sd["n_Conv_0.weight"].shape[0]
    stages = []
    i = 1
    for stage in STAGES:
        # the projection (first or fourth convolution of the stage) gives the stage's width
        proj = i if stage.shortcut_first else i + 3
        stages.append(Stage(int(sd[f"n_Conv_{proj}.weight"].shape[0]), stage.blocks, stage.stride,
                            stage.shortcut_first))
        i += 4 + 3 * (stage.blocks - 1)
    n_tags = int(sd[f"n_Conv_{i}.weight"].shape[0])
    return tuple(stages), int(stem), n_tags
