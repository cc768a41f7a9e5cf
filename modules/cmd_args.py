"""Command-line flags with the names and meanings A1111 users know.

Standard library only: launch.py parses these before the venv (and its packages) exists.
"""
from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
from typing import Sequence

from modules import extension_preload   # stdlib only too


class FlagError(SystemExit):
    """An unknown or malformed flag; carries the message printed to the user."""


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Our flags only (extensions' preload.py add theirs on top: see parse(preload=True))."""
    p = argparse.ArgumentParser(prog="launch.py", description="Stable Diffusion web UI", allow_abbrev=False,
                                add_help=add_help)
    add = p.add_argument

    # network and auth
    add("--listen", action="store_true", help="bind to 0.0.0.0 so other machines can connect")
    add("--port", type=int, default=None, help="port (default 7860, or 7861 with --nowebui)")
    add("--server-name", default=None, help="host name or address to bind")
    add("--share", action="store_true", help="gradio share link (refused: it needs the internet)")
    add("--subpath", default=None, help="serve the UI under this sub-path")
    add("--tls-keyfile", default=None)
    add("--tls-certfile", default=None)
    add("--cors-allow-origins", default=None, help="comma-separated list of allowed CORS origins")
    add("--cors-allow-origins-regex", default=None)
    add("--gradio-auth", default=None, help="user:pass[,user2:pass2] for the UI")
    add("--gradio-auth-path", default=None, help="file with user:pass lines for the UI")
    add("--api", action="store_true", help="serve the /sdapi/v1 HTTP API beside the UI")
    add("--nowebui", action="store_true", help="serve the API only (default port 7861)")
    add("--api-auth", default=None, help="user:pass[,user2:pass2] HTTP Basic auth for the API")
    add("--api-log", action="store_true", help="log every API request")
    add("--api-server-stop", action="store_true", help="add server-stop/restart/kill API routes")
    add("--enable-insecure-extension-access", action="store_true")
    add("--autolaunch", action="store_true", help="open the UI in the default browser")

    # device and precision
    add("--skip-torch-cuda-test", action="store_true")
    add("--use-cpu", nargs="+", default=[], help="modules to run on the CPU (all, SD, ...)")
    add("--device-id", default=None)
    add("--no-half", action="store_true", help="keep the model in fp32")
    add("--no-half-vae", action="store_true", help="keep the VAE in fp32")
    add("--precision", choices=["full", "half", "autocast"], default="autocast")
    add("--upcast-sampling", action="store_true",
        help="sample in fp32 around a half-precision UNet (what the sampler always does here)")
    add("--medvram", action="store_true",
        help="GPU: keep text encoder, UNet and VAE in RAM, each moved to the GPU only while it runs")
    add("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only")
    add("--lowvram", action="store_true", help="GPU: like --medvram, but the UNet is moved in block by block")
    add("--lowram", action="store_true")
    add("--xformers", action="store_true", help="use xformers attention (CUDA with xformers installed; else SDPA)")
    add("--force-enable-xformers", action="store_true", help="same as --xformers")
    add("--opt-sdp-attention", action="store_true", help="PyTorch scaled-dot-product attention (the default)")
    add("--opt-sdp-no-mem-attention", action="store_true",
        help="scaled-dot-product attention without its memory-efficient kernel (deterministic on CUDA)")
    add("--opt-split-attention", action="store_true", help="attention computed in slices (less memory)")
    add("--opt-split-attention-v1", action="store_true", help="same as --opt-split-attention")
    add("--opt-split-attention-invokeai", action="store_true", help="same as --opt-split-attention")
    add("--opt-sub-quad-attention", action="store_true", help="same as --opt-split-attention")
    add("--disable-opt-split-attention", action="store_true",
        help="plain attention, no optimisation (diffusers' classic processor)")
    add("--opt-channelslast", action="store_true", help="channels-last memory format for the UNet (default on CUDA)")
    add("--compile", action="store_true", help="torch.compile the UNet (slow first image, faster after)")
    add("--tiled-vae", action="store_true",
        help="always decode and encode images in overlapping tiles (large images are tiled anyway when needed)")
    add("--disable-nan-check", action="store_true", help="do not check UNet and VAE outputs for NaNs")

    # paths
    add("--data-dir", default=None, help="base folder for user data (models, outputs, settings)")
    add("--models-dir", default=None, help="base folder for models (default DATA_DIR/models)")
    add("--ckpt", default=None, help="checkpoint to load at start")
    add("--ckpt-dir", default=None, help="extra folder scanned for checkpoints")
    add("--config", default=None, help="LDM .yaml config for the --ckpt checkpoint")
    add("--vae-dir", default=None)
    add("--vae-path", default=None, help="VAE file to use (overrides the setting)")
    add("--embeddings-dir", default=None)
    add("--hypernetwork-dir", default=None)
    add("--lora-dir", default=None)
    # upscaler model folders (A1111's flags; --hat-models-path is ours, for models/HAT)
    add("--esrgan-models-path", default=None, help="folder of ESRGAN upscaler models (default models/ESRGAN)")
    add("--realesrgan-models-path", default=None,
        help="folder of Real-ESRGAN upscaler models (default models/RealESRGAN)")
    add("--swinir-models-path", default=None, help="folder of SwinIR upscaler models (default models/SwinIR)")
    add("--dat-models-path", default=None, help="folder of DAT upscaler models (default models/DAT)")
    add("--hat-models-path", default=None, help="folder of HAT upscaler models (default models/HAT)")
    add("--scunet-models-path", default=None, help="folder of ScuNET models (default models/ScuNET)")
    # face restorer folders (A1111's flags): their files are looked for there first, and downloaded there
    add("--gfpgan-models-path", default=None,
        help="folder of GFPGAN models and the face detector (default models/GFPGAN)")
    add("--codeformer-models-path", default=None, help="folder of CodeFormer models (default models/Codeformer)")
    add("--localizations-dir", default=None)
    add("--styles-file", default=None)
    add("--ui-settings-file", default=None, help="settings file (default DATA_DIR/config.json)")
    add("--ui-config-file", default=None)
    add("--no-download-sd-model", action="store_true", help="never try to download the default model")
    add("--no-demo-model", action="store_true",
        help="do not fall back to the bundled demo model (models/Stable-diffusion/demo) when no other model is present")
    add("--no-hashing", action="store_true", help="do not compute sha256 of checkpoints")

    # launch
    add("--skip-install", action="store_true", help="do not install requirements")
    add("--skip-prepare-environment", action="store_true")
    add("--skip-python-version-check", action="store_true")
    add("--exit", action="store_true", help="prepare the environment, then quit")
    add("--reinstall-torch", action="store_true")
    add("--reinstall-xformers", action="store_true")
    add("--disable-all-extensions", action="store_true", help="load no extension")
    add("--disable-extra-extensions", action="store_true", help="load the built-in extensions only")
    add("--safe-mode", action="store_true",
        help="load no extension (settings unchanged; the Extensions tab still works to fix things)")
    add("--reinstall-extensions", action="store_true", help="run every enabled extension's install.py again")
    add("--extension-install-timeout", type=float, default=None, metavar="SECONDS",
        help="stop an extension's install.py after this long (default 900, or $EXTENSION_INSTALL_TIMEOUT)")
    add("--github-mirror", default=None, metavar="PREFIX",
        help="fetch https://github.com/... as PREFIX + URL (git and downloads; or $GITHUB_MIRROR)")
    add("--freeze-settings", action="store_true")
    add("--theme", choices=["light", "dark"], default=None)
    add("--skip-load-model-at-start", action="store_true")
    add("--run-tests", action="store_true",
        help="prepare the environment, then run the test suite (pass pytest options in PYTEST_ADDOPTS)")
    return p


_parser = build_parser


def known_flags(parser: argparse.ArgumentParser | None = None) -> list[str]:
    parser = parser or build_parser()
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def parse_known(argv: Sequence[str] | None = None, env: dict | None = None) -> argparse.Namespace:
    """Our flags from argv plus COMMANDLINE_ARGS, ignoring anything else (before extensions could add theirs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv += shlex.split((os.environ if env is None else env).get("COMMANDLINE_ARGS", ""))
    return build_parser(add_help=False).parse_known_args(argv)[0]


def parse(argv: Sequence[str] | None = None, env: dict | None = None, preload: bool = False,
          builtin_dir=None) -> argparse.Namespace:
    """Parse argv plus COMMANDLINE_ARGS (split like a shell line, appended as A1111 does).

    An unknown flag raises FlagError with the closest known flags, instead of argparse's generic message.
    ``preload=True`` (the launcher in the venv, the server) first lets the extensions' preload.py add their flags
    (modules/extension_preload.py); then an unknown flag is ignored with a warning when it belongs to an extension
    that is off, or when it is not close to any known flag (most likely from an extension that was removed); one
    that looks like a typo of a known flag is still an error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    argv += shlex.split(env.get("COMMANDLINE_ARGS", ""))
    parser = build_parser()
    foreign: dict[str, str] | None = None
    if preload:
        base = build_parser(add_help=False).parse_known_args(argv)[0]
        foreign = extension_preload.apply(parser, base, builtin_dir)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = known_flags(parser)
        if foreign is not None:
            unknown = _ignore_extension_flags(unknown, foreign, flags)
    if unknown:
        lines = []
        for item in unknown:
            name = item.split("=", 1)[0]
            close = difflib.get_close_matches(name, flags, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            lines.append(f"unknown argument {item!r}{hint}")
        raise FlagError("error: " + "\n       ".join(lines) + "\n(run with --help for the list of flags)")
    if args.port is None:
        args.port = 7861 if args.nowebui else 7860
    if args.nowebui:
        args.api = True
    from modules.extension_manager import access_blocked  # A1111's flag, read by extensions; the Extensions tab's gate
    args.disable_extension_access = access_blocked(args) is not None
    return args


def _ignore_extension_flags(unknown: list[str], foreign: dict[str, str], flags: list[str]) -> list[str]:
    """Drop (with a warning) the unknown flags of extensions that are off or gone, and the values after them;
    return what is left to report as an error."""
    left, skipping = [], False
    for item in unknown:
        if not item.startswith("-"):
            if not skipping:
                left.append(item)
            continue
        name = item.split("=", 1)[0]
        owner = foreign.get(name)
        if owner is not None:
            print(f"[flags] ignoring {name}: it belongs to the extension {owner!r}, which is not loaded",
                  file=sys.stderr, flush=True)
            skipping = True
        elif name.startswith("--") and not difflib.get_close_matches(name, flags, n=1, cutoff=0.6):
            print(f"[flags] ignoring unknown flag {name} (no extension adds it; from one that was removed?)",
                  file=sys.stderr, flush=True)
            skipping = True
        else:
            left.append(item)
            skipping = False
    return left
