"""The three CMU OpenPose networks (converted from Caffe): body (body_pose_model.pth), hand (hand_pose_model.pth)
and face (facenet.pth).

Each is a VGG-19 trunk followed by six refinement stages; stage n+1 sees stage n's maps concatenated with the trunk's
features. The files store every convolution under its Caffe layer name at the top level ("conv1_1.weight",
"Mconv7_stage6_L2.bias"), so the convolutions are registered under exactly those names and a file loads strictly,
with no key renaming.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

POOL = "pool"

# (name, in, out, kernel); every convolution is followed by a ReLU unless listed in the owner's `linear` set
_VGG_START = (("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), POOL,
              ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3), POOL,
              ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3),
              POOL,
              ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3))


def _refinement(suffix: str, channels_in: int, channels_out: int) -> tuple:
    """Stages 2–6: five 7×7 convolutions, a 1×1, and a linear 1×1 to the output maps."""
    return ((f"Mconv1_{suffix}", channels_in, 128, 7),
            *((f"Mconv{i}_{suffix}", 128, 128, 7) for i in range(2, 6)),
            (f"Mconv6_{suffix}", 128, 128, 1),
            (f"Mconv7_{suffix}", 128, channels_out, 1))


class _FlatConvs(nn.Module):
    """Convolutions registered under their Caffe names; `_run` applies one named sequence."""

    def _add(self, spec: tuple) -> tuple:
        for item in spec:
            if item != POOL:
                name, cin, cout, k = item
                self.add_module(name, nn.Conv2d(cin, cout, k, stride=1, padding=k // 2))
        return spec

    def _run(self, spec: tuple, x: torch.Tensor, linear: frozenset) -> torch.Tensor:
        for item in spec:
            if item == POOL:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
                continue
            x = getattr(self, item[0])(x)
            if item[0] not in linear:
                x = F.relu(x)
        return x


class BodyPoseNet(_FlatConvs):
    """Input: BGR image /256 − 0.5, N×3×H×W with H, W multiples of 8. Output: (PAFs N×38×H/8×W/8, heatmaps
    N×19×H/8×W/8: 18 keypoints + background)."""

    def __init__(self):
        super().__init__()
        self.trunk = self._add(_VGG_START + (("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3)))
        self.stages = []
        for branch, out in (("L1", 38), ("L2", 19)):
            first = self._add(((f"conv5_1_CPM_{branch}", 128, 128, 3), (f"conv5_2_CPM_{branch}", 128, 128, 3),
                               (f"conv5_3_CPM_{branch}", 128, 128, 3), (f"conv5_4_CPM_{branch}", 128, 512, 1),
                               (f"conv5_5_CPM_{branch}", 512, out, 1)))
            later = [self._add(_refinement(f"stage{s}_{branch}", 128 + 38 + 19, out)) for s in range(2, 7)]
            self.stages.append([first, *later])
        # the last conv of every stage is linear, except stage 6's heatmaps: the reference implementations put a
        # ReLU there (their exclusion list names stage 6's PAF layer twice), and the peak search saw those maps
        self.linear = frozenset({f"conv5_5_CPM_{b}" for b in ("L1", "L2")}
                                | {f"Mconv7_stage{s}_{b}" for s in range(2, 7) for b in ("L1", "L2")}
                                ) - {"Mconv7_stage6_L2"}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._run(self.trunk, x, self.linear)
        pafs_stages, heat_stages = self.stages
        h = features
        for paf_spec, heat_spec in zip(pafs_stages, heat_stages):
            pafs = self._run(paf_spec, h, self.linear)
            heat = self._run(heat_spec, h, self.linear)
            h = torch.cat([pafs, heat, features], dim=1)
        return pafs, heat


class _KeypointNet(_FlatConvs):
    """Hand and face: one branch of `points` maps (keypoints + background). Input: BGR /256 − 0.5."""

    def __init__(self, points: int):
        super().__init__()
        self.trunk = self._add(_VGG_START + (("conv4_3", 512, 512, 3), ("conv4_4", 512, 512, 3),
                                             ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3),
                                             ("conv5_3_CPM", 512, 128, 3)))
        first = self._add((("conv6_1_CPM", 128, 512, 1), ("conv6_2_CPM", 512, points, 1)))
        self.stages = [first, *(self._add(_refinement(f"stage{s}", 128 + points, points)) for s in range(2, 7))]
        self.linear = frozenset({"conv6_2_CPM"} | {f"Mconv7_stage{s}" for s in range(2, 7)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self._run(self.trunk, x, self.linear)
        h = features
        for spec in self.stages:
            out = self._run(spec, h, self.linear)
            h = torch.cat([out, features], dim=1)
        return out


class HandPoseNet(_KeypointNet):
    """Output N×22×H/8×W/8: 21 hand keypoints + background."""

    def __init__(self):
        super().__init__(22)


class FacePoseNet(_KeypointNet):
    """Output N×71×H/8×W/8: 70 face keypoints + background (only the last stage is used)."""

    def __init__(self):
        super().__init__(71)
