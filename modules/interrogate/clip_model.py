"""OpenAI's CLIP (ViT-L/14 for A1111's interrogator) on transformers' CLIPModel.

A1111 loads `ViT-L-14.pt` with OpenAI's `clip` package. That file is a TorchScript archive in OpenAI's key layout
(`visual.transformer.resblocks.N.attn.in_proj_weight`, `token_embedding`, `text_projection`, …). We read its tensors
without running it (modules.models.torchscript_tensors; a plain state dict in the same layout, .pt/.bin/
.safetensors, loads through modules.models.safe_load) and map them onto transformers' CLIPModel, whose network is the
same (quick GELU, pre-norm blocks, class token, end-of-text pooling). The config is read from the shapes, the heads
as width / 64 as OpenAI's code does. The tokenizer is the SD text encoders' (built offline from open_clip's BPE).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules.models import safe_load, torchscript_tensors

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

_BLOCK = (
    ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
    ("attn.out_proj.", "self_attn.out_proj."),
)


def _block_keys(sd: dict, src: str, dst: str, out: dict) -> None:
    rx = re.compile(re.escape(src) + r"(\d+)\.(.+)$")
    for key, value in sd.items():
        m = rx.match(key)
        if not m:
            continue
        layer, rest = m.group(1), m.group(2)
        base = f"{dst}{layer}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = "weight" if rest.endswith("weight") else "bias"
            q, k, v = value.chunk(3, dim=0)
            for name, part in (("q", q), ("k", k), ("v", v)):
                out[f"{base}self_attn.{name}_proj.{kind}"] = part
            continue
        for old, new in _BLOCK:
            if rest.startswith(old):
                out[base + new + rest[len(old):]] = value
                break


def to_transformers_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t().contiguous(),
        "logit_scale": sd["logit_scale"],
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].t().contiguous(),
    }
    _block_keys(sd, "transformer.resblocks.", "text_model.encoder.layers.", out)
    _block_keys(sd, "visual.transformer.resblocks.", "vision_model.encoder.layers.", out)
    return out


def _layers(sd: dict, prefix: str) -> int:
    rx = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def config_from_state_dict(sd: dict[str, torch.Tensor]):
    from transformers import CLIPConfig
    v_width = int(sd["visual.conv1.weight"].shape[0])
    patch = int(sd["visual.conv1.weight"].shape[-1])
    grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    t_width = int(sd["ln_final.weight"].shape[0])
    vision = dict(hidden_size=v_width, num_hidden_layers=_layers(sd, "visual.transformer.resblocks."),
                  intermediate_size=int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                  num_attention_heads=max(1, v_width // 64), image_size=grid * patch, patch_size=patch,
                  hidden_act="quick_gelu")
    text = dict(hidden_size=t_width, num_hidden_layers=_layers(sd, "transformer.resblocks."),
                intermediate_size=int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                num_attention_heads=max(1, t_width // 64), vocab_size=int(sd["token_embedding.weight"].shape[0]),
                max_position_embeddings=int(sd["positional_embedding"].shape[0]), hidden_act="quick_gelu",
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPConfig(vision_config=vision, text_config=text, projection_dim=int(sd["visual.proj"].shape[1]))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if torchscript_tensors.is_torchscript(path):
        return torchscript_tensors.load_torchscript_tensors(path)
    return safe_load.load_state_dict(path)


class ClipRanker:
    """Image and text features of OpenAI's CLIP, and A1111's ranking of a category's lines against an image."""

    def __init__(self, path: Path, tokenizer, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import CLIPModel
        sd = read_weights(path)
        if "visual.conv1.weight" not in sd or "token_embedding.weight" not in sd:
            raise safe_load.ModelFileError(f"{path}: not an OpenAI CLIP model (no visual.conv1/token_embedding)")
        config = config_from_state_dict(sd)
        model = CLIPModel(config)
        missing, _unexpected = model.load_state_dict(
            {k: v.float() for k, v in to_transformers_keys(sd).items()}, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise safe_load.ModelFileError(f"{path}: not an OpenAI CLIP model; missing {missing[:5]}")
        self.model = model.eval().to(device=device, dtype=dtype)
        self.device, self.dtype = torch.device(device), dtype
        self.image_size = config.vision_config.image_size
        self.context = config.text_config.max_position_embeddings
        self.tokenizer = tokenizer

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """OpenAI's preprocessing: bicubic resize of the short side, centre crop, CLIP's normalisation."""
        size = self.image_size
        im = image.convert("RGB")
        scale = size / min(im.width, im.height)
        im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))),
                       Image.Resampling.BICUBIC)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        im = im.crop((left, top, left + size, top + size))
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        return x.unsqueeze(0).to(self.device, self.dtype)

    @torch.no_grad()
    def image_features(self, image: Image.Image) -> torch.Tensor:
        feats = self.model.get_image_features(pixel_values=self.pixels(image))
        feats = getattr(feats, "pooler_output", feats)
        return feats / feats.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def rank(self, image_features: torch.Tensor, lines: list[str], top_count: int = 1) -> list[tuple[str, float]]:
        """The `top_count` lines closest to the image, with A1111's score: the softmax over the lines of 100 × the
        cosine similarity, in percent."""
        if not lines:
            return []
        top_count = min(top_count, len(lines))
        tokens = self.tokenizer(list(lines), padding="max_length", truncation=True, max_length=self.context,
                                return_tensors="pt")
        text = self.model.get_text_features(input_ids=tokens.input_ids.to(self.device))
        text = getattr(text, "pooler_output", text)
        text = text / text.norm(dim=-1, keepdim=True)
        similarity = (100.0 * image_features.float() @ text.float().T).softmax(dim=-1).mean(dim=0)
        probs, labels = similarity.topk(top_count)
        return [(lines[int(i)], float(p) * 100) for p, i in zip(probs, labels)]
