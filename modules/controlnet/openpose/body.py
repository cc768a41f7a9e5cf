"""Body keypoints from the CMU body network: heatmap peaks per part, then part affinity fields (PAFs) to decide
which peaks belong to the same person (Cao et al., "Realtime Multi-Person 2D Pose Estimation using Part Affinity
Fields"). The thresholds, the sampling and the greedy grouping follow the reference implementation the openpose
ControlNets' training maps came from, so a photo gives the same skeletons.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from modules.controlnet.openpose import maps

PARTS = 18
NET_HEIGHT = 184            # the network sees the image scaled to this height (box size 368 × scale 0.5)
PEAK_THRESHOLD = 0.1        # smoothed heatmap value a peak must exceed
PAF_THRESHOLD = 0.05        # PAF alignment each sample must exceed …
PAF_SAMPLES = 10            # … at more than 80 % of these points along the candidate limb
MIN_PARTS = 4               # a person needs at least this many parts …
MIN_MEAN_SCORE = 0.4        # … and this score per part

# the 19 part pairs the network has PAFs for (COCO-18 indices), and the PAF channels (x, y) of each; the first 17
# are the drawn limbs, the last two (shoulder–ear) only help grouping
PAIRS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))
PAF_CHANNELS = ((12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
                (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27))


@dataclass
class Peak:
    x: int
    y: int
    score: float
    id: int                 # index over all parts' peaks


@dataclass
class Skeleton:
    parts: list = field(default_factory=lambda: [-1] * PARTS)   # peak id per part, −1 = absent
    score: float = 0.0
    count: int = 0


def network_maps(net: torch.nn.Module, image_bgr: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps H×W×19, PAFs H×W×38) at the image's own size."""
    h, w = image_bgr.shape[:2]
    scale = NET_HEIGHT / h
    small = maps.resize(image_bgr, int(w * scale), int(h * scale))
    padded, bottom, right = maps.pad_to_stride(small)
    with torch.no_grad():
        pafs, heatmaps = net(maps.to_input(padded, device))
    heat = maps.upsample_maps(heatmaps, padded.shape[:2], (bottom, right), (h, w))
    paf = maps.upsample_maps(pafs, padded.shape[:2], (bottom, right), (h, w))
    return heat.astype(np.float64), paf.astype(np.float64)


def find_peaks(heatmaps: np.ndarray) -> list[list[Peak]]:
    """Per part: local maxima of the σ=3-smoothed heatmap (≥ its four neighbours, > PEAK_THRESHOLD), scored with the
    unsmoothed value, in row-major order."""
    all_peaks, next_id = [], 0
    for part in range(PARTS):
        raw = heatmaps[:, :, part]
        smooth = gaussian_filter(raw, sigma=3)
        padded = np.pad(smooth, 1)          # zeros around: a border pixel only competes with the inside
        centre = padded[1:-1, 1:-1]
        is_peak = ((centre >= padded[:-2, 1:-1]) & (centre >= padded[2:, 1:-1])
                   & (centre >= padded[1:-1, :-2]) & (centre >= padded[1:-1, 2:]) & (centre > PEAK_THRESHOLD))
        ys, xs = np.nonzero(is_peak)
        peaks = [Peak(int(x), int(y), float(raw[y, x]), next_id + n) for n, (x, y) in enumerate(zip(xs, ys))]
        next_id += len(peaks)
        all_peaks.append(peaks)
    return all_peaks


def connect(all_peaks: list[list[Peak]], pafs: np.ndarray, image_height: int) -> list[list[tuple[int, int, float]]]:
    """Per pair: accepted connections (peak id A, peak id B, PAF score), best first, each peak used once."""
    connections = []
    for (part_a, part_b), (cx, cy) in zip(PAIRS, PAF_CHANNELS):
        cand_a, cand_b = all_peaks[part_a], all_peaks[part_b]
        scored = []
        for i, a in enumerate(cand_a):
            for j, b in enumerate(cand_b):
                s = _limb_score(a, b, pafs[:, :, cx], pafs[:, :, cy], image_height)
                if s is not None:
                    scored.append((s, i, j))
        scored.sort(key=lambda t: t[0], reverse=True)       # stable: ties keep (i, j) order
        chosen, used_a, used_b = [], set(), set()
        for s, i, j in scored:
            if i in used_a or j in used_b:
                continue
            chosen.append((cand_a[i].id, cand_b[j].id, s))
            used_a.add(i)
            used_b.add(j)
            if len(chosen) >= min(len(cand_a), len(cand_b)):
                break
        connections.append(chosen)
    return connections


def _limb_score(a: Peak, b: Peak, paf_x: np.ndarray, paf_y: np.ndarray, image_height: int) -> float | None:
    """Mean PAF alignment along a→b plus a penalty for limbs longer than half the image height; None when fewer than
    80 % of the samples align or the total is not positive."""
    dx, dy = b.x - a.x, b.y - a.y
    norm = max(0.001, float(np.hypot(dx, dy)))
    xs = np.round(np.linspace(a.x, b.x, PAF_SAMPLES)).astype(int)
    ys = np.round(np.linspace(a.y, b.y, PAF_SAMPLES)).astype(int)
    along = paf_x[ys, xs] * (dx / norm) + paf_y[ys, xs] * (dy / norm)
    score = float(along.sum() / len(along)) + min(0.5 * image_height / norm - 1, 0)
    if np.count_nonzero(along > PAF_THRESHOLD) > 0.8 * len(along) and score > 0:
        return score
    return None


def group(all_peaks: list[list[Peak]], connections: list[list[tuple[int, int, float]]]) -> list[Skeleton]:
    """Assemble people pair by pair: a connection extends the person holding one of its ends, joins two people that
    share no part, or (for the 17 drawn limbs) starts a new person. Sparse or weak people are dropped."""
    score_of = {p.id: p.score for peaks in all_peaks for p in peaks}
    people: list[Skeleton] = []
    for k, ((part_a, part_b), chosen) in enumerate(zip(PAIRS, connections)):
        for id_a, id_b, s in chosen:
            hits = [p for p in people if p.parts[part_a] == id_a or p.parts[part_b] == id_b][:2]
            if len(hits) == 1:
                person = hits[0]
                if person.parts[part_b] != id_b:
                    person.parts[part_b] = id_b
                    person.count += 1
                    person.score += score_of[id_b] + s
            elif len(hits) == 2:
                first, second = hits
                if not any(x >= 0 and y >= 0 for x, y in zip(first.parts, second.parts)):
                    first.parts = [x if x >= 0 else y for x, y in zip(first.parts, second.parts)]
                    first.count += second.count
                    first.score += second.score + s
                    people.remove(second)
                else:
                    first.parts[part_b] = id_b
                    first.count += 1
                    first.score += score_of[id_b] + s
            elif k < 17:
                person = Skeleton(count=2, score=score_of[id_a] + score_of[id_b] + s)
                person.parts[part_a], person.parts[part_b] = id_a, id_b
                people.append(person)
    return [p for p in people if p.count >= MIN_PARTS and p.score / p.count >= MIN_MEAN_SCORE]


def skeletons_to_points(all_peaks: list[list[Peak]], people: list[Skeleton]) -> list[list]:
    """Each person as 18 (x, y) pixel points or None."""
    where = {p.id: (float(p.x), float(p.y)) for peaks in all_peaks for p in peaks}
    return [[where[i] if i >= 0 else None for i in person.parts] for person in people]


def estimate(net: torch.nn.Module, image_bgr: np.ndarray, device: torch.device) -> list[list]:
    """People in a BGR image: 18 (x, y) pixel points (or None) each."""
    heat, paf = network_maps(net, image_bgr, device)
    peaks = find_peaks(heat)
    return skeletons_to_points(peaks, group(peaks, connect(peaks, paf, image_bgr.shape[0])))
