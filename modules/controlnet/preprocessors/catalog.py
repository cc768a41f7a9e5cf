"""The preprocessors that need downloaded weights (§3.3): labels, sliders, tags, priorities and annotator files as
sd-webui-controlnet 1.1.455 registers them, so /controlnet/module_list, /controlnet/control_types and infotexts
match the extension's.

Built in: the openpose family (modules.controlnet.openpose), MiDaS depth/normal, Depth Anything v1/v2, HED, PiDiNet,
TEED, lineart (realistic, coarse, anime, anime denoise) and MLSD (modules.controlnet.annotator_nets), each checked
against the extension's own code on the same weights. The other networks are not built in yet: their `run` first
makes sure the weight files are there (so offline users learn what to fetch), then raises PreprocessorUnavailable
instead of producing a fake map.

sha256 values: no published checksum of these files was found in the sources searched (the hub repositories serve
them without one in any file we could read), so every `sha256` is None and a download is checked for completeness
only.
"""
from __future__ import annotations

from modules.controlnet.annotators import HF, AnnotatorFile, annotators_file
from modules.controlnet.detected import Detected
from modules.controlnet.preprocessors.base import RESOLUTION, Preprocessor, PreprocessorUnavailable, Slider

# --- annotator files ---------------------------------------------------------------------------------------------
_CONTROLNET_CKPTS = HF + "lllyasviel/ControlNet/resolve/main/annotator/ckpts/"
_QINGLONG = HF + "bdsqlsz/qinglong_controlnet-lllite/resolve/main/Annotators/"
_DWPOSE = HF + "yzd-v/DWPose/resolve/main/"
_ANTELOPE = HF + "DIAMONIK7777/antelopev2/resolve/main/"

OPENPOSE_FILES = tuple(annotators_file(n, "openpose") for n in ("body_pose_model.pth", "hand_pose_model.pth",
                                                                  "facenet.pth"))
YOLOX = AnnotatorFile("yolox_l.onnx", "openpose", _DWPOSE + "yolox_l.onnx")
DW_POSE = AnnotatorFile("dw-ll_ucoco_384.onnx", "openpose", _DWPOSE + "dw-ll_ucoco_384.onnx")
_ANIMAL_NAME = "rtmpose-m_simcc-ap10k_pt-aic-coco_210e-256x256-7a041aa1_20230206.onnx"
ANIMAL_POSE = AnnotatorFile(_ANIMAL_NAME, "openpose", _QINGLONG + _ANIMAL_NAME)
DENSEPOSE = AnnotatorFile("densepose_r50_fpn_dl.torchscript", "densepose",
                          HF + "LayerNorm/DensePose-TorchScript-with-hint-image/resolve/main/"
                               "densepose_r50_fpn_dl.torchscript")
MIDAS = AnnotatorFile("dpt_hybrid-midas-501f0c75.pt", "midas", _CONTROLNET_CKPTS + "dpt_hybrid-midas-501f0c75.pt")
LERES = annotators_file("res101.pth", "leres")
LERES_BOOST = annotators_file("latest_net_G.pth", "leres")
ZOE = annotators_file("ZoeD_M12_N.pt", "zoedepth")
DEPTH_ANYTHING = AnnotatorFile("depth_anything_vitl14.pth", "depth_anything",
                               HF + "spaces/LiheYoung/Depth-Anything/resolve/main/checkpoints/"
                                    "depth_anything_vitl14.pth")
DEPTH_ANYTHING_V2 = AnnotatorFile("depth_anything_v2_vitl.safetensors", "depth_anything_v2",
                                  HF + "MackinationsAi/Depth-Anything-V2_Safetensors/resolve/main/"
                                       "depth_anything_v2_vitl.safetensors")
HED = annotators_file("ControlNetHED.pth", "hed")
PIDINET = annotators_file("table5_pidinet.pth", "pidinet")
MLSD = AnnotatorFile("mlsd_large_512_fp32.pth", "mlsd", _CONTROLNET_CKPTS + "mlsd_large_512_fp32.pth")
LINEART = annotators_file("sk_model.pth", "lineart")
LINEART_COARSE = annotators_file("sk_model2.pth", "lineart")
LINEART_ANIME = annotators_file("netG.pth", "lineart_anime")
MANGA_LINE = annotators_file("erika.pth", "manga_line")
NORMAL_BAE = annotators_file("scannet.pt", "normal_bae")
NORMAL_DSINE = AnnotatorFile("dsine.pt", "normal_dsine", _QINGLONG + "dsine.pt")
UNIFORMER = AnnotatorFile("upernet_global_small.pth", "uniformer", _CONTROLNET_CKPTS + "upernet_global_small.pth")
ONEFORMER_COCO = annotators_file("150_16_swin_l_oneformer_coco_100ep.pth", "oneformer")
ONEFORMER_ADE20K = annotators_file("250_16_swin_l_oneformer_ade20k_160k.pth", "oneformer")
ANIME_FACE = AnnotatorFile("UNet.pth", "anime_face_segment", _QINGLONG + "UNet.pth")
MOBILE_SAM = AnnotatorFile("mobile_sam.pt", "mobile_sam", HF + "dhkim2810/MobileSAM/resolve/main/mobile_sam.pt")
TEED = AnnotatorFile("7_model.pth", "TEED", _QINGLONG + "7_model.pth")
MTEED = AnnotatorFile("MTEED.pth", "TEED", HF + "TheMistoAI/MistoLine/resolve/main/Anyline/MTEED.pth")
LAMA = annotators_file("ControlNetLama.pth", "lama")
# The CLIP vision encoders are saved under the extension's own names, not the URLs' (pytorch_model.bin).
CLIP_VITL = AnnotatorFile("clip_vitl.pth", "clip_vision",
                          HF + "openai/clip-vit-large-patch14/resolve/main/pytorch_model.bin")
CLIP_G = AnnotatorFile("clip_g.pth", "clip_vision", HF + "lllyasviel/Annotators/resolve/main/clip_g.pth")
CLIP_H = AnnotatorFile("clip_h.pth", "clip_vision",
                       HF + "h94/IP-Adapter/resolve/main/models/image_encoder/pytorch_model.bin")
# insightface's antelopev2 pack, from the mirror the extension uses (insightface's own release link is gone).
ANTELOPEV2 = tuple(AnnotatorFile(n, "insightface/models/antelopev2", _ANTELOPE + n) for n in (
    "1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx", "scrfd_10g_bnkps.onnx"))
# Not listed, because they come through other packages' own downloaders, not as single files the extension
# fetches: insightface's buffalo_l pack (a zip), facexlib's detection/parsing weights, the hand refiner
# (huggingface_hub snapshot of hr16/ControlNet-HandRefiner-pruned), PuLID's EVA02-CLIP, mediapipe's face mesh
# (inside the mediapipe wheel).


# --- runners -----------------------------------------------------------------------------------------------------
def _unavailable(label: str, needs: str = ""):
    def run(image, resolution, a, b, seed, store) -> Detected:
        raise PreprocessorUnavailable(
            f"preprocessor {label}: its network is not built into this program yet{needs}; choose another "
            "preprocessor, or give a ready-made control map with preprocessor \"none\"")
    return run


def _openpose(body: bool, hand: bool, face: bool):
    def run(image, resolution, a, b, seed, store) -> Detected:
        from modules.controlnet.openpose import detect
        from modules.controlnet.resize import to_rgb
        return detect.run(to_rgb(image), resolution, store, body=body, hand=hand, face=face)
    return run


def _hed(**options):
    def run(image, resolution, a, b, seed, store) -> Detected:
        from modules.controlnet.annotator_nets import hed
        return hed.run(image, resolution, store, **options)
    return run


def _teed(image, resolution, a, b, seed, store) -> Detected:
    from modules.controlnet.annotator_nets import teed
    return teed.run(image, resolution, store, safe_steps=int(a))


def _pidinet(**options):
    def run(image, resolution, a, b, seed, store) -> Detected:
        from modules.controlnet.annotator_nets import pidinet
        return pidinet.run(image, resolution, store, **options)
    return run


def _lineart(module: str, **options):
    """lineart, lineart_coarse (module "lineart"), lineart_anime, lineart_anime_denoise ("manga_line")."""
    def run(image, resolution, a, b, seed, store) -> Detected:
        from modules.controlnet.annotator_nets import lineart, lineart_anime, manga_line
        runner = {"lineart": lineart, "lineart_anime": lineart_anime, "manga_line": manga_line}[module].run
        return runner(image, resolution, store, **options)
    return run


def _mlsd(image, resolution, a, b, seed, store) -> Detected:
    from modules.controlnet.annotator_nets import mlsd
    return mlsd.run(image, resolution, a, b, store)


def _midas(normals: bool):
    """depth_midas, normal_midas (slider a: the normal background threshold)."""
    def run(image, resolution, a, b, seed, store) -> Detected:
        from modules.controlnet.annotator_nets import midas
        return midas.run(image, resolution, store, normals=normals, background=a)
    return run


def _depth_anything(version: int):
    def run(image, resolution, a, b, seed, store) -> Detected:
        from modules.controlnet.annotator_nets import depth_anything
        return depth_anything.run(image, resolution, store, version=version)
    return run


def _entry(name, label=None, weights=(), resolution=RESOLUTION, a=None, b=None, tags=(), priority=0,
           model_free=False, mask=False, requires_mask=False, image=True, fn=None, needs="") -> Preprocessor:
    label = label or name
    return Preprocessor(name=name, label=label, resolution=resolution, slider_a=a, slider_b=b, slider_c=None,
                        tags=tuple(tags), priority=priority, model_free=model_free, accepts_mask=mask,
                        weights=tuple(weights), returns_image=image, requires_mask=requires_mask,
                        fn=fn or _unavailable(label, needs))


_NEAR = Slider("Remove Near %", 0, 0, 100, 0.1)
_BACKGROUND = Slider("Remove Background %", 0, 0, 100, 0.1)
_SAFE_STEPS = Slider("Safe Steps", 2, 0, 10, 1)
_NOISE = Slider("Noise Augmentation", 0.0, 0.0, 1.0)

CATALOG: tuple[Preprocessor, ...] = (
    # OpenPose (the three classic files are loaded even for body only, as the extension does)
    _entry("openpose", weights=OPENPOSE_FILES, tags=("OpenPose",), fn=_openpose(True, False, False)),
    _entry("openpose_face", weights=OPENPOSE_FILES, tags=("OpenPose",), fn=_openpose(True, False, True)),
    _entry("openpose_faceonly", weights=OPENPOSE_FILES, tags=("OpenPose",), fn=_openpose(False, False, True)),
    _entry("openpose_full", weights=OPENPOSE_FILES, tags=("OpenPose",), priority=100,
           fn=_openpose(True, True, True)),
    _entry("openpose_hand", weights=OPENPOSE_FILES, tags=("OpenPose",), fn=_openpose(True, True, False)),
    _entry("dw_openpose_full", weights=(YOLOX, DW_POSE), tags=("OpenPose",)),
    _entry("animal_openpose", weights=(YOLOX, ANIMAL_POSE), tags=("OpenPose",)),
    _entry("densepose", label="densepose (pruple bg & purple torso)", weights=(DENSEPOSE,), tags=("OpenPose",)),
    _entry("densepose_parula", label="densepose_parula (black bg & blue torso)", weights=(DENSEPOSE,),
           tags=("OpenPose",)),
    # Depth
    _entry("depth", label="depth_midas", weights=(MIDAS,), tags=("Depth",), priority=100, fn=_midas(False)),
    _entry("depth_leres", weights=(LERES,), a=_NEAR, b=_BACKGROUND, tags=("Depth",)),
    _entry("depth_leres++", weights=(LERES, LERES_BOOST), a=_NEAR, b=_BACKGROUND, tags=("Depth",)),
    _entry("depth_zoe", weights=(ZOE,), tags=("Depth",)),
    _entry("depth_anything", weights=(DEPTH_ANYTHING,), tags=("Depth",), fn=_depth_anything(1)),
    _entry("depth_anything_v2", weights=(DEPTH_ANYTHING_V2,), tags=("Depth",), fn=_depth_anything(2)),
    _entry("depth_hand_refiner", tags=("Depth",),
           needs=" (it also needs the hand_refiner_portable package and the hr16/ControlNet-HandRefiner-pruned "
                 "weights)"),
    # NormalMap
    _entry("normal_map", label="normal_midas", weights=(MIDAS,), a=Slider("Normal Background Threshold", 0.4, 0.0,
                                                                          1.0, 0.01), tags=("NormalMap",),
           fn=_midas(True)),
    _entry("normal_bae", weights=(NORMAL_BAE,), tags=("NormalMap",), priority=100),
    _entry("normal_dsine", weights=(NORMAL_DSINE,), a=Slider("Fov", 60, 0, 360, 0.1),
           b=Slider("Iterations", 5, 1, 20, 1), tags=("NormalMap",)),
    # SoftEdge / Scribble / sketch
    _entry("hed", label="softedge_hed", weights=(HED,), tags=("SoftEdge",), fn=_hed()),
    _entry("hed_safe", label="softedge_hedsafe", weights=(HED,), tags=("SoftEdge",), fn=_hed(safe=True)),
    _entry("pidinet", label="softedge_pidinet", weights=(PIDINET,), tags=("SoftEdge",), priority=100,
           fn=_pidinet()),
    _entry("pidinet_safe", label="softedge_pidisafe", weights=(PIDINET,), tags=("SoftEdge",),
           fn=_pidinet(safe=True)),
    _entry("softedge_teed", weights=(TEED,), a=_SAFE_STEPS, tags=("SoftEdge",), fn=_teed),
    _entry("softedge_anyline", weights=(MTEED,), resolution=Slider("Resolution", 1280, 64, 2048, 8), a=_SAFE_STEPS,
           tags=("SoftEdge",)),
    _entry("scribble_hed", weights=(HED,), tags=("Scribble", "SparseCtrl"), fn=_hed(scribble=True)),
    _entry("pidinet_scribble", label="scribble_pidinet", weights=(PIDINET,), tags=("Scribble", "SparseCtrl"),
           priority=100, fn=_pidinet(scribble=True)),
    _entry("pidinet_sketch", label="t2ia_sketch_pidi", weights=(PIDINET,), tags=("T2I-Adapter",),
           fn=_pidinet(sketch=True)),
    # MLSD
    _entry("mlsd", weights=(MLSD,), a=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
           b=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01), tags=("MLSD",), priority=100, fn=_mlsd),
    # Lineart
    _entry("lineart", label="lineart_realistic", weights=(LINEART,), tags=("Lineart",), fn=_lineart("lineart")),
    _entry("lineart_coarse", weights=(LINEART_COARSE,), tags=("Lineart",), fn=_lineart("lineart", coarse=True)),
    _entry("lineart_anime", weights=(LINEART_ANIME,), tags=("Lineart",), fn=_lineart("lineart_anime")),
    _entry("lineart_anime_denoise", weights=(MANGA_LINE,), tags=("Lineart",), fn=_lineart("manga_line")),
    # Segmentation
    _entry("segmentation", label="seg_ufade20k", weights=(UNIFORMER,), tags=("Segmentation",)),
    _entry("oneformer_coco", label="seg_ofcoco", weights=(ONEFORMER_COCO,), tags=("Segmentation",)),
    _entry("oneformer_ade20k", label="seg_ofade20k", weights=(ONEFORMER_ADE20K,), tags=("Segmentation",),
           priority=100),
    _entry("anime_face_segment", label="seg_anime_face", weights=(ANIME_FACE,), tags=("Segmentation",)),
    _entry("mobile_sam", weights=(MOBILE_SAM,), tags=("Segmentation",)),
    # Inpaint (LaMa always runs at 256 px, so no resolution slider)
    _entry("inpaint_only+lama", weights=(LAMA,), resolution=None, tags=("Inpaint",), mask=True, requires_mask=True),
    # Faces
    _entry("mediapipe_face", a=Slider("Max Faces", 1, 1, 10, 1), b=Slider("Min Face Confidence", 0.5, 0.01, 1.0,
                                                                          0.01),
           needs=" (it needs the mediapipe package)"),
    _entry("instant_id_face_embedding", weights=ANTELOPEV2, tags=("Instant-ID",), image=False,
           needs=" (it also needs the insightface package)"),
    _entry("instant_id_face_keypoints", weights=ANTELOPEV2, tags=("Instant-ID",),
           needs=" (it also needs the insightface package)"),
    _entry("facexlib", resolution=None, needs=" (it needs the facexlib package)"),
    # CLIP vision and IP-Adapter (embeddings, not images)
    _entry("clip_vision", label="t2ia_style_clipvision", weights=(CLIP_VITL,), tags=("T2I-Adapter",), image=False),
    _entry("ip-adapter-auto", tags=("IP-Adapter",), priority=1000, image=False),
    _entry("ip-adapter_clip_sd15", label="ip-adapter_clip_h", weights=(CLIP_H,), tags=("IP-Adapter",), priority=100,
           mask=True, image=False),
    _entry("ip-adapter_clip_sdxl", label="ip-adapter_clip_g", weights=(CLIP_G,), tags=("IP-Adapter",), mask=True,
           image=False),
    _entry("ip-adapter_clip_sdxl_plus_vith", weights=(CLIP_H,), tags=("IP-Adapter",), mask=True, image=False),
    _entry("ip-adapter_face_id", tags=("IP-Adapter",), image=False,
           needs=" (it also needs the insightface package and its buffalo_l models)"),
    _entry("ip-adapter_face_id_plus", weights=(CLIP_H,), tags=("IP-Adapter",), image=False,
           needs=" (it also needs the insightface package and its buffalo_l models)"),
    _entry("ip-adapter_pulid", weights=ANTELOPEV2, resolution=None, tags=("IP-Adapter",), image=False,
           needs=" (it also needs insightface, facexlib and EVA02-CLIP)"),
    _entry("revision_clipvision", weights=(CLIP_G,), a=_NOISE, tags=("Revision",), priority=100, model_free=True,
           image=False),
    _entry("revision_ignore_prompt", weights=(CLIP_G,), a=_NOISE, tags=("Revision",), model_free=True, image=False),
)
