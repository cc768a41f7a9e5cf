"""Flags, tokenizer assets, infotext formatting, settings persistence: the small pieces the rest stands on."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from modules import cmd_args
from modules.engine import infotext
from modules.options import OptionError, Options
from tests.support import ROOT


def test_flags_same_names_as_a1111_and_commandline_args():
    args = cmd_args.parse(["--api", "--port", "9000", "--no-half", "--ckpt-dir", "/x"],
                          env={"COMMANDLINE_ARGS": "--listen --precision full --use-cpu all"})
    assert (args.api, args.port, args.no_half, args.ckpt_dir) == (True, 9000, True, "/x")
    assert (args.listen, args.precision, args.use_cpu) == (True, "full", ["all"])
    assert cmd_args.parse(["--nowebui"], env={}).port == 7861
    assert cmd_args.parse([], env={}).port == 7860
    for flag in ("--server-name", "--api-auth", "--gradio-auth", "--vae-dir", "--vae-path", "--data-dir",
                 "--models-dir", "--embeddings-dir", "--lora-dir", "--localizations-dir", "--ui-settings-file",
                 "--medvram", "--lowvram", "--xformers", "--opt-sdp-attention", "--skip-install",
                 "--skip-torch-cuda-test", "--no-download-sd-model", "--no-hashing", "--disable-all-extensions",
                 "--enable-insecure-extension-access", "--skip-load-model-at-start", "--exit", "--no-half-vae"):
        assert flag in cmd_args.known_flags(), flag


def test_unknown_flag_suggests_close_matches():
    with pytest.raises(cmd_args.FlagError) as err:
        cmd_args.parse(["--lisen", "--no-halff"], env={})
    assert "--listen" in str(err.value.code) and "--no-half" in str(err.value.code)
    out = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--ap1"], capture_output=True, text=True)
    assert out.returncode == 2 and "did you mean --api" in out.stderr


def test_tokenizer_gives_standard_clip_ids(tmp_path):
    from modules.models.loader import tokenizer
    tok = tokenizer(tmp_path / "tok", "<|endoftext|>")
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408
    assert json.loads((tmp_path / "tok" / "vocab.json").read_text())["<|endoftext|>"] == 49407
    assert tokenizer(tmp_path / "tok", "!").pad_token_id == 0  # OpenCLIP pads with "!"


def test_infotext_format_and_parse_back():
    text = infotext.build("a cat, (masterpiece:1.2)", "blurry", {
        "Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7.0, "Seed": 1234,
        "Size": "512x512", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly", "Clip skip": None,
        "Hires upscaler": "Latent, nearest"})
    assert text == ("a cat, (masterpiece:1.2)\nNegative prompt: blurry\n"
                    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512, "
                    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Hires upscaler: \"Latent, nearest\", "
                    f"Version: {infotext.VERSION}")
    parsed = infotext.parse(text)
    assert parsed["Prompt"] == "a cat, (masterpiece:1.2)" and parsed["Negative prompt"] == "blurry"
    assert (parsed["Steps"], parsed["CFG scale"], parsed["Seed"], parsed["Size-1"]) == (20, 7, 1234, 512)
    assert parsed["Hires upscaler"] == "Latent, nearest"
    assert "Negative prompt" not in infotext.build("x", "", {"Steps": 1})


def test_settings_validate_and_write_atomically(tmp_path):
    path = tmp_path / "config.json"
    opts = Options(path)
    opts.set("samples_save", False)
    assert json.loads(path.read_text())["samples_save"] is False
    with pytest.raises(OptionError, match="samples_save.*true or false"):
        opts.set("samples_save", "yes")
    with pytest.raises(OptionError, match="unknown setting 'nope'"):
        opts.set("nope", 1)
    with pytest.raises(OptionError, match="CLIP_stop_at_last_layers.*between 1 and 12"):
        opts.set("CLIP_stop_at_last_layers", 40)
    assert Options(path).samples_save is False
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind
    path.write_text("{broken")
    reopened = Options(path)
    assert reopened.load_error and reopened.samples_save is True
    assert (tmp_path / "config.json.broken").read_text() == "{broken"


def test_engine_imports_neither_gradio_nor_fastapi():
    code = ("import sys; import modules.runtime, modules.processing, modules.engine.run, modules.models.manager, modules.jobs; "
            "bad = [m for m in ('gradio', 'fastapi', 'starlette') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_precision_choice_on_cpu(monkeypatch):
    import torch

    from modules import devices
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.cpu_has_bf16("flags : fpu avx512f avx512_bf16 sse") is True
    assert devices.cpu_has_bf16("flags : fpu avx2") is False
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda cpuinfo=None: True)
    auto = devices.from_args(cmd_args.parse([], env={}))
    assert (auto.dtype, auto.vae_dtype) == (torch.bfloat16, torch.bfloat16)  # issue #21: bf16 VAE, fp32 conv_out
    no_half_vae = devices.from_args(cmd_args.parse(["--no-half-vae"], env={}))
    assert (no_half_vae.dtype, no_half_vae.vae_dtype) == (torch.bfloat16, torch.float32)
    assert devices.from_args(cmd_args.parse(["--no-half"], env={})).dtype == torch.float32
    assert devices.from_args(cmd_args.parse(["--precision", "full"], env={})).dtype == torch.float32
    assert devices.from_args(None).dtype == torch.float32
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda cpuinfo=None: False)
    assert devices.from_args(cmd_args.parse([], env={})).dtype == torch.float32
    half = devices.from_args(cmd_args.parse(["--precision", "half"], env={}))
    assert (half.dtype, half.vae_dtype) == (torch.bfloat16, torch.bfloat16)
