"""Tiny random-weight interrogator files in the real layouts: BLIP's own key names in a `{"model": …}` .pth, OpenAI's
CLIP as a TorchScript archive (as `ViT-L-14.pt` is) or a plain state dict, A1111's DeepDanbooru port with a `tags`
list, and category lists. Each writer returns what the tests compare against (the transformers model the file was
made from), so the key conversions are checked against an independent original."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

BLIP_VISION_BACK = (
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"visual_encoder.blocks.\1.norm1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"visual_encoder.blocks.\1.norm2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"visual_encoder.blocks.\1.attn.qkv."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
)


def tiny_blip(seed: int = 0):
    from transformers import BlipConfig, BlipForConditionalGeneration
    torch.manual_seed(seed)
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
                           image_size=32, patch_size=16, layer_norm_eps=1e-6),
        text_config=dict(vocab_size=30524, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=1, max_position_embeddings=64, encoder_hidden_size=32,
                         bos_token_id=30522, eos_token_id=102, sep_token_id=102, pad_token_id=0))
    return BlipForConditionalGeneration(config).eval()


def write_blip(path: Path, seed: int = 0):
    model = tiny_blip(seed)
    sd = {}
    for key, value in model.state_dict().items():
        if key.startswith("text_decoder."):
            sd[key] = value.clone()
            continue
        for pattern, repl in BLIP_VISION_BACK:
            new, n = re.subn(pattern, repl, key)
            if n:
                sd[new] = value.clone()
                break
        else:
            raise AssertionError(f"unmapped BLIP key {key}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd, "epoch": 4}, path)
    return model


def tiny_clip(seed: int = 0):
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                         vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
                           image_size=32, patch_size=16, hidden_act="quick_gelu"),
        projection_dim=16)
    return CLIPModel(config).eval()


def openai_clip_state_dict(model) -> dict[str, torch.Tensor]:
    """transformers' CLIPModel → OpenAI's key layout (q, k, v joined into in_proj; projections transposed)."""
    hf = model.state_dict()
    out = {"token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": hf["text_model.final_layer_norm.weight"],
           "ln_final.bias": hf["text_model.final_layer_norm.bias"],
           "text_projection": hf["text_projection.weight"].t(), "logit_scale": hf["logit_scale"],
           "visual.class_embedding": hf["vision_model.embeddings.class_embedding"],
           "visual.conv1.weight": hf["vision_model.embeddings.patch_embedding.weight"],
           "visual.positional_embedding": hf["vision_model.embeddings.position_embedding.weight"],
           "visual.ln_pre.weight": hf["vision_model.pre_layrnorm.weight"],
           "visual.ln_pre.bias": hf["vision_model.pre_layrnorm.bias"],
           "visual.ln_post.weight": hf["vision_model.post_layernorm.weight"],
           "visual.ln_post.bias": hf["vision_model.post_layernorm.bias"],
           "visual.proj": hf["visual_projection.weight"].t()}
    for src, dst, n in (("text_model.encoder.layers.", "transformer.resblocks.", 2),
                        ("vision_model.encoder.layers.", "visual.transformer.resblocks.", 2)):
        for i in range(n):
            a, b = f"{src}{i}.", f"{dst}{i}."
            for kind in ("weight", "bias"):
                out[f"{b}attn.in_proj_{kind}"] = torch.cat([hf[f"{a}self_attn.{x}_proj.{kind}"] for x in "qkv"])
                for old, new in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                                 ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                    out[f"{b}{new}.{kind}"] = hf[f"{a}{old}.{kind}"]
    return {k: v.clone().contiguous() for k, v in out.items()}


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.logit_scale


def _module_tree(sd: dict[str, torch.Tensor]) -> nn.Module:
    root = _Holder()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, nn.Module())
            node = getattr(node, name)
        node.register_parameter(leaf, nn.Parameter(value.half(), requires_grad=False))
    # OpenAI's blocks keep their causal mask as a tensor attribute; the reader must skip it
    root.transformer.resblocks.get_submodule("0").register_buffer("attn_mask", torch.full((77, 77), float("-inf")))
    return root


def write_clip(path: Path, seed: int = 0, torchscript: bool = True):
    """The tiny CLIP saved as OpenAI does (a TorchScript archive of fp16 tensors) or as a plain state dict."""
    model = tiny_clip(seed)
    sd = openai_clip_state_dict(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if torchscript:
        traced = torch.jit.trace(_module_tree(sd), torch.ones(1, dtype=torch.float16))
        traced.save(str(path))
        # what the loader should reproduce: the same weights after the fp16 round trip
        model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    else:
        torch.save(sd, path)
    return model


def write_deepdanbooru(path: Path, tags: list[str], seed: int = 0, width_div: int = 64):
    """A1111's DeepDanbooru layout (n_Conv_0 … n_Conv_178, `tags`) with the widths divided by `width_div`."""
    from modules.interrogate.deepdanbooru_net import STAGES, STEM_WIDTH, DeepDanbooruNet, Stage
    torch.manual_seed(seed)
    stages = tuple(Stage(max(4, s.width // width_div), s.blocks, s.stride, s.shortcut_first) for s in STAGES)
    net = DeepDanbooruNet(len(tags), stages, max(4, STEM_WIDTH // width_div)).eval()
    sd = dict(net.state_dict())
    sd["tags"] = list(tags)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    net.tags = list(tags)
    return net


CATEGORIES = {"artists": ["Claude Monet", "Hokusai", "Rembrandt"], "flavors": ["dreamy", "gritty", "neon", "calm"],
              "mediums": ["an oil painting", "a photograph"], "movements": ["impressionism", "cubism"]}


def write_categories(folder: Path, lists: dict[str, list[str]] = CATEGORIES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in lists.items():
        (folder / f"{name}.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    return folder
