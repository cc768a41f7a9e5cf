"""BLIP captions (the first part of A1111's CLIP interrogation) on transformers' BlipForConditionalGeneration.

A1111 runs Salesforce's own BLIP code on `model_base_caption_capfilt_large.pth` (a ViT-B/16 image encoder at 384 px
and a BERT decoder with cross-attention). transformers has the same network; only the image encoder's names differ,
so the file is loaded through a key rename (`visual_encoder.blocks.N.attn.qkv` → `vision_model.encoder.layers.N.
self_attn.qkv`, …) and a config read from its shapes. The decoder's keys are already transformers' BERT names.

The tokenizer is bert-base-uncased with BLIP's two added tokens ([DEC] as the start of a caption, [ENC]); its
vocabulary ships in assets/ (A1111 fetched it from the model hub on first use). Captions start from BLIP's prompt
"a picture of ", which is cut off the result, as BLIP does.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules.models import safe_load

VOCAB_FILE = Path(__file__).parent / "assets" / "bert-base-uncased-vocab.txt"
PROMPT = "a picture of "
# BLIP normalises with CLIP's mean and deviation
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

_VISION_RENAMES = (
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.norm\.", "vision_model.post_layernorm."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision_model.encoder.layers.\1.self_attn.qkv."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
)


def to_transformers_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BLIP's own key names → BlipForConditionalGeneration's; keys of other parts (ITM heads, momentum encoders,
    position_ids buffers) are left out."""
    out = {}
    for key, value in sd.items():
        if key.startswith("text_decoder.") and not key.endswith("position_ids"):
            out[key] = value
            continue
        for pattern, replacement in _VISION_RENAMES:
            new, n = re.subn(pattern, replacement, key)
            if n:
                out[new] = value
                break
    return out


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def config_from_state_dict(sd: dict[str, torch.Tensor]):
    """The BlipConfig of a BLIP caption file, read from its shapes (head counts: width / 64, as ViT-B and BERT)."""
    from transformers import BlipConfig
    v_width = int(sd["visual_encoder.cls_token"].shape[-1])
    patch = int(sd["visual_encoder.patch_embed.proj.weight"].shape[-1])
    grid = int(round((sd["visual_encoder.pos_embed"].shape[1] - 1) ** 0.5))
    t_width = int(sd["text_decoder.bert.embeddings.word_embeddings.weight"].shape[1])
    vision = dict(hidden_size=v_width, intermediate_size=int(sd["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0]),
                  num_hidden_layers=_count(sd, r"^visual_encoder\.blocks\.(\d+)\."),
                  num_attention_heads=max(1, v_width // 64), image_size=grid * patch, patch_size=patch,
                  layer_norm_eps=1e-6)
    text = dict(vocab_size=int(sd["text_decoder.bert.embeddings.word_embeddings.weight"].shape[0]),
                hidden_size=t_width,
                intermediate_size=int(sd["text_decoder.bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
                num_hidden_layers=_count(sd, r"^text_decoder\.bert\.encoder\.layer\.(\d+)\."),
                num_attention_heads=max(1, t_width // 64),
                max_position_embeddings=int(sd["text_decoder.bert.embeddings.position_embeddings.weight"].shape[0]),
                encoder_hidden_size=int(
                    sd["text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"].shape[1]),
                layer_norm_eps=1e-12, bos_token_id=30522, eos_token_id=102, sep_token_id=102, pad_token_id=0)
    return BlipConfig(vision_config=vision, text_config=text)


def tokenizer():
    """bert-base-uncased with BLIP's [DEC] (ids 30522) and [ENC] (30523)."""
    from transformers import BertTokenizer
    tok = BertTokenizer(str(VOCAB_FILE), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


class BlipCaptioner:
    def __init__(self, path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        from transformers import BlipForConditionalGeneration
        sd = safe_load.load_state_dict(path)
        if "visual_encoder.cls_token" not in sd or "text_decoder.bert.embeddings.word_embeddings.weight" not in sd:
            raise safe_load.ModelFileError(f"{path}: not a BLIP caption model (no visual_encoder/text_decoder keys)")
        config = config_from_state_dict(sd)
        model = BlipForConditionalGeneration(config)
        missing, _unexpected = model.load_state_dict(to_transformers_keys(sd), strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise safe_load.ModelFileError(f"{path}: not a BLIP caption model; missing {missing[:5]}")
        self.model = model.eval().to(device=device, dtype=dtype)
        self.device, self.dtype = torch.device(device), dtype
        self.image_size = config.vision_config.image_size
        self.tokenizer = tokenizer()

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """A1111's BLIP input: a bicubic resize to a square (no crop), CLIP's normalisation."""
        im = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        return x.unsqueeze(0).to(self.device, self.dtype)

    @torch.no_grad()
    def caption(self, image: Image.Image, num_beams: int = 1, min_length: int = 24, max_length: int = 48) -> str:
        ids = self.tokenizer(PROMPT, return_tensors="pt").input_ids.to(self.device)
        out = self.model.generate(pixel_values=self.pixels(image), input_ids=ids, num_beams=max(1, int(num_beams)),
                                  do_sample=False, min_length=int(min_length), max_length=int(max_length),
                                  repetition_penalty=1.0)
        text = self.tokenizer.decode(out[0], skip_special_tokens=True)
        return text[len(PROMPT):] if text.startswith(PROMPT) else text
