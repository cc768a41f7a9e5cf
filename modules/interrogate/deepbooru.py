"""DeepBooru tagging as A1111 does it: the image resized into 512×512 (resize and fill), the network's per-tag
probabilities, tags above `interrogate_deepbooru_score_threshold` (ratings left out), sorted by name or by
probability (`deepbooru_sort_alpha`), `deepbooru_filter_tags` removed, underscores as spaces
(`deepbooru_use_spaces`), `\\ ( )` escaped (`deepbooru_escape`), `(tag:0.987)` with `interrogate_return_ranks`."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules.engine.image_ops import resize_image
from modules.interrogate.deepdanbooru_net import DeepDanbooruNet, stages_from_state_dict
from modules.models import safe_load

_SPECIAL = re.compile(r"([\\()])")


def load(path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> DeepDanbooruNet:
    data = safe_load.load_pickle(path)
    if not isinstance(data, dict) or "n_Conv_0.weight" not in data:
        raise safe_load.ModelFileError(f"{path}: not a DeepDanbooru model (no n_Conv_0.weight)")
    tags = data.get("tags", [])
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise safe_load.ModelFileError(f"{path}: its 'tags' entry is not a list of tag names")
    weights = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    try:
        stages, stem, n_tags = stages_from_state_dict(weights)
        net = DeepDanbooruNet(n_tags, stages, stem)
        net.load_state_dict(weights)
    except (KeyError, RuntimeError) as exc:
        raise safe_load.ModelFileError(f"{path}: does not fit the DeepDanbooru network: "
                                       f"{str(exc).splitlines()[0]}") from None
    if len(tags) != n_tags:
        raise safe_load.ModelFileError(f"{path}: {len(tags)} tag names for {n_tags} outputs")
    net.tags = list(tags)
    return net.eval().to(device=device, dtype=dtype)


@torch.no_grad()
def probabilities(net: DeepDanbooruNet, image: Image.Image) -> dict[str, float]:
    pic = resize_image(2, image.convert("RGB"), 512, 512)
    x = torch.from_numpy(np.asarray(pic, dtype=np.float32)[None] / 255.0)
    param = next(net.parameters())
    y = net(x.to(param.device, param.dtype))[0].float().cpu()
    return dict(zip(net.tags, y.tolist()))


def format_tags(probs: dict[str, float], threshold: float = 0.5, sort_alpha: bool = True, use_spaces: bool = True,
                escape: bool = True, filter_tags: str = "", include_ranks: bool = False) -> str:
    kept = {t: p for t, p in probs.items() if p >= threshold and not t.startswith("rating:")}
    order = sorted(kept) if sort_alpha else sorted(kept, key=lambda t: -kept[t])
    unwanted = {t.strip().replace(" ", "_") for t in filter_tags.split(",")}
    out = []
    for tag in order:
        if tag in unwanted:
            continue
        text = tag.replace("_", " ") if use_spaces else tag
        if escape:
            text = _SPECIAL.sub(r"\\\1", text)
        out.append(f"({text}:{kept[tag]:.3f})" if include_ranks else text)
    return ", ".join(out)
