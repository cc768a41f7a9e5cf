"""Saving images the way A1111 names them: outputs/<kind>-images/YYYY-MM-DD/NNNNN-SEED-prompt.png, with infotext.

Two callers, two forms of `save_image`. The runtime (and the UI's Save button) call ours,
`save_image(image, outdir, seed, prompt, infotext, date_dirs=…)`, which returns the Path written. Extensions call
A1111's, `save_image(image, path, basename, seed=None, prompt=None, extension='png', info=None, …, p=None)`, which
returns `(fullfn, txt_fullfn)` and follows A1111's file-name settings (`FilenameGenerator`). The form is told
apart by the third argument: our seed is an int, A1111's basename a string. Both fire the extensions'
`before_image_saved` (which may change the image, the file name and the text chunks) and `image_saved` callbacks.
"""
from __future__ import annotations

import datetime
import io
import math
import os
import re
import threading
from pathlib import Path

from PIL import Image, PngImagePlugin

from modules import atomic_file
from modules.image_tiles import Grid, combine_grid, split_grid  # noqa: F401 (A1111 names: SD upscale's tiles)

_save_lock = threading.Lock()
_INVALID = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
MAX_NAME = 128


def sanitize(text: str, limit: int = 100) -> str:
    text = _INVALID.sub("", text.replace("\n", " ")).strip().strip(".")
    text = re.sub(r"\s+", " ", text)
    return text[:limit].rstrip(" .")


def png_bytes(image: Image.Image, infotext: str | None) -> bytes:
    meta = PngImagePlugin.PngInfo()
    if infotext:
        meta.add_text("parameters", infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def read_info(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    """An image's infotext and its other text fields, for PNG Info in the UI and /sdapi/v1/png-info alike.

    The infotext is where A1111 puts it: the PNG text chunk "parameters", else the EXIF UserComment (JPEG and WebP
    saves), else a JPEG/GIF comment. The fields are the image's other string-valued `info` entries."""
    info = getattr(image, "info", None) or {}
    items = {k: v for k, v in info.items() if isinstance(v, str) and k != "parameters"}
    text = info.get("parameters")
    if text is None and "exif" in info:
        text = _exif_user_comment(image) or None
    if text is None and isinstance(info.get("comment"), bytes):
        text = info["comment"].decode("utf-8", errors="replace") or None
    return text, items


_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
# EXIF UserComment starts with an 8-byte character code (EXIF 2.3, 4.6.5); A1111 writes UNICODE (UTF-16 big-endian)
_COMMENT_CODES = ((b"UNICODE\x00", "utf-16-be"), (b"ASCII\x00\x00\x00", "ascii"), (b"\x00" * 8, "utf-8"))


def _exif_user_comment(image: Image.Image) -> str | None:
    try:
        raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # a malformed EXIF block is an image without infotext, not an error
        return None
    if isinstance(raw, bytes):
        for prefix, encoding in _COMMENT_CODES:
            if raw.startswith(prefix):
                return raw[len(prefix):].decode(encoding, errors="replace")
        return raw.decode("utf-8", errors="replace")
    return raw


def next_number(folder: Path) -> int:
    best = -1
    if folder.is_dir():
        for entry in os.scandir(folder):
            m = re.match(r"(\d{5,})-", entry.name)
            if m:
                best = max(best, int(m.group(1)))
    return best + 1


def _callbacks():
    from modules import script_callbacks  # lazily: script_callbacks may import modules that import this one
    return script_callbacks


def encode(image: Image.Image, fmt: str, pnginfo: dict | None, quality: int = 80, lossless: bool = False) -> bytes:
    """`image` as a file of format `fmt` (png, jpg/jpeg, webp, …). A PNG gets every pnginfo entry as a text chunk;
    JPEG and WebP get the "parameters" entry as EXIF UserComment (UTF-16, as A1111 writes it)."""
    fmt = fmt.lower().lstrip(".")
    buf = io.BytesIO()
    if fmt == "png":
        meta = PngImagePlugin.PngInfo()
        for key, value in (pnginfo or {}).items():
            meta.add_text(key, str(value))
        image.save(buf, format="PNG", pnginfo=meta)
        return buf.getvalue()
    if fmt in ("jpg", "jpeg", "webp"):
        if image.mode in ("RGBA", "LA", "P") and fmt != "webp":
            image = image.convert("RGB")
        kwargs = {"quality": quality}
        if fmt == "webp":
            kwargs["lossless"] = lossless
        text = (pnginfo or {}).get("parameters")
        if text:
            exif = Image.Exif()
            exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\x00" + str(text).encode("utf-16-be")
            kwargs["exif"] = exif.tobytes()
        image.save(buf, format="JPEG" if fmt in ("jpg", "jpeg") else "WEBP", **kwargs)
        return buf.getvalue()
    image.save(buf, format=Image.registered_extensions().get("." + fmt, fmt.upper()))
    return buf.getvalue()


def write_image(image: Image.Image, filename: str | os.PathLike, pnginfo: dict | None, **kwargs) -> None:
    """Writes atomically (temp file + rename), so an interrupted save never leaves a broken image."""
    data = encode(image, os.path.splitext(os.fspath(filename))[1] or ".png", pnginfo, **kwargs)
    with atomic_file.replacing(Path(filename), sync=False) as tmp:
        tmp.write_bytes(data)


def save_sample(image: Image.Image, outdir: Path, seed: int, prompt: str, infotext: str | None,
                date_dirs: bool = True, p=None, extension: str = "png") -> Path:
    """Our form: outdir[/YYYY-MM-DD]/NNNNN-SEED-prompt.<extension> with the infotext (a PNG text chunk, or EXIF for
    jpg/webp), numbered past the folder's highest."""
    extension = (extension or "png").lower().lstrip(".")
    callbacks = _callbacks()
    folder = Path(outdir) / datetime.date.today().isoformat() if date_dirs else Path(outdir)
    folder.mkdir(parents=True, exist_ok=True)
    with _save_lock:
        number = next_number(folder)
        stem = f"{number:05}-{seed}"
        words = sanitize(prompt)
        if words:
            stem = f"{stem}-{words}"[:MAX_NAME]
        params = callbacks.ImageSaveParams(image, p, str(folder / f"{stem}.{extension}"),
                                           {"parameters": infotext} if infotext else {})
        callbacks.before_image_saved_callback(params)
        write_image(params.image, params.filename, params.pnginfo)
    callbacks.image_saved_callback(params)
    return Path(params.filename)


def save_image(image: Image.Image, path, *args, **kwargs):
    """Ours, `(image, outdir, seed: int, prompt, infotext, date_dirs=…) -> Path`, or A1111's,
    `(image, path, basename, seed=None, prompt=None, extension='png', info=None, …) -> (fullfn, txt_fullfn)`."""
    if "date_dirs" in kwargs or (args and isinstance(args[0], int) and not isinstance(args[0], bool)):
        return save_sample(image, path, *args, **kwargs)
    return save_image_a1111(image, path, *args, **kwargs)


# --- A1111's saving and image helpers, for extensions ------------------------------------------------------------
def _opt(name: str, default):
    """A setting as A1111's code reads it, or its A1111 default when there is no runtime (tools, tests)."""
    from modules import shared
    if not shared.bound():
        return default
    return shared.opts.data.get(name, default)


INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
INVALID_FILENAME_PREFIX = " "
INVALID_FILENAME_POSTFIX = " ."
MAX_FILENAME_PART_LENGTH = 128
_NON_LETTERS = re.compile(r"[\s' \"(){}\[\]]+")
_PATTERN = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
_PATTERN_ARGS = re.compile(r"(.*)<([^>]*)>$")


def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(c): "_" for c in INVALID_FILENAME_CHARS})
    text = text.lstrip(INVALID_FILENAME_PREFIX)[:MAX_FILENAME_PART_LENGTH]
    return text.rstrip(INVALID_FILENAME_POSTFIX)


class FilenameGenerator:
    """A1111's file-name patterns: `[seed]`, `[prompt]`, `[prompt_spaces]`, `[prompt_words]`, `[steps]`, `[cfg]`,
    `[width]`, `[height]`, `[sampler]`, `[scheduler]`, `[model_name]`, `[model_hash]`, `[styles]`, `[date]`,
    `[datetime<%Y%m%d%H%M%S>]`, `[job_timestamp]`, `[seed_first]`, `[seed_last]`, `[denoising]`, `[clip_skip]`,
    `[batch_number]`, `[generation_number]`, `[none]`. An unknown tag stays in the name as written."""

    def __init__(self, p, seed, prompt, image=None, zip=False, basename=""):  # noqa: A002 (A1111 name)
        self.p, self.seed, self.prompt, self.image, self.zip, self.basename = p, seed, prompt, image, zip, basename

    def _p(self, name: str, default=None):
        return getattr(self.p, name, default) if self.p is not None else default

    def _model(self):
        from modules import shared
        return shared.sd_model if shared.bound() else None

    def _tag(self, tag: str, args: list[str]) -> str | None:
        prompt = self.prompt if self.prompt is not None else self._p("prompt", "")
        if tag == "seed":
            return str(self.seed) if self.seed is not None else ""
        if tag in ("seed_first", "seed_last"):
            seeds = self._p("all_seeds") or [self.seed]
            return str(seeds[0] if tag == "seed_first" else seeds[-1])
        if tag in ("prompt", "prompt_no_styles"):
            return sanitize_filename_part(prompt)
        if tag == "prompt_spaces":
            return sanitize_filename_part(prompt, replace_spaces=False)
        if tag == "prompt_words":
            words = [w for w in _NON_LETTERS.split(prompt or "") if w] or ["empty"]
            return sanitize_filename_part(" ".join(words[:_opt("directories_max_prompt_words", 8)]),
                                          replace_spaces=False)
        simple = {"steps": "steps", "cfg": "cfg_scale", "sampler": "sampler_name", "scheduler": "scheduler",
                  "denoising": "denoising_strength", "clip_skip": "clip_skip", "batch_number": "batch_index",
                  "generation_number": "iteration"}
        if tag in simple:
            value = self._p(simple[tag])
            return sanitize_filename_part(str(value)) if value is not None else ""
        if tag in ("width", "height"):
            value = getattr(self.image, tag, None) if self.image is not None else self._p(tag)
            return str(value) if value is not None else ""
        if tag == "styles":
            return sanitize_filename_part(", ".join(self._p("styles") or []) or "None", replace_spaces=False)
        if tag in ("model_name", "model_hash"):
            model = self._model()
            info = getattr(model, "sd_checkpoint_info", None)
            if info is None:
                return ""
            return sanitize_filename_part(info.model_name if tag == "model_name" else (info.shorthash or ""))
        if tag == "date":
            return datetime.date.today().isoformat()
        if tag == "datetime":
            fmt = args[0] if args and args[0] else "%Y%m%d%H%M%S"
            return sanitize_filename_part(datetime.datetime.now().strftime(fmt), replace_spaces=False)
        if tag == "job_timestamp":
            from modules import shared
            return str(shared.state.job_timestamp)
        if tag == "none":
            return ""
        return None

    def apply(self, x: str) -> str:
        out = ""
        for m in _PATTERN.finditer(x):
            text, pattern = m.groups()
            if pattern is None:
                out += text
                continue
            args = []
            while True:
                am = _PATTERN_ARGS.match(pattern)
                if am is None:
                    break
                pattern, arg = am.groups()
                args.insert(0, arg)
            value = self._tag(pattern.lower(), args)
            out += text + (f"[{pattern}]" if value is None else value)
        return out


def get_next_sequence_number(path: str, basename: str) -> int:
    """The number after the highest `NNNNN-…` (or `<basename>-NNNN…`) file in `path` (files only: A1111 also
    counted the date folders beside them, so a '2024-05-01' folder made the next image 02025)."""
    result = -1
    prefix = f"{basename}-" if basename != "" else ""
    for name in os.listdir(path):
        if name.startswith(prefix) and os.path.isfile(os.path.join(path, name)):
            first = os.path.splitext(name[len(prefix):])[0].split("-")[0]
            if first.isdigit():
                result = max(int(first), result)
    return result + 1


def save_image_with_geninfo(image: Image.Image, geninfo: str | None, filename: str, extension: str | None = None,
                            existing_pnginfo: dict | None = None, pnginfo_section_name: str = "parameters") -> None:
    """Writes `image` to `filename` with `geninfo` (PNG text chunk, or EXIF UserComment for JPEG/WebP), when the
    enable_pnginfo setting allows."""
    pnginfo = dict(existing_pnginfo or {})
    if geninfo is not None:
        pnginfo[pnginfo_section_name] = geninfo
    if not _opt("enable_pnginfo", True):
        pnginfo = {}
    ext = (extension or os.path.splitext(filename)[1] or ".png").lower().lstrip(".")
    if ext != "png":  # JPEG/WebP carry one text, the infotext, whatever the section's name
        text = pnginfo.get(pnginfo_section_name)
        pnginfo = {"parameters": text} if text is not None else {}
    data = encode(image, ext, pnginfo, quality=_opt("jpeg_quality", 80), lossless=_opt("webp_lossless", False))
    with atomic_file.replacing(Path(filename), sync=False) as tmp:
        tmp.write_bytes(data)


def save_image_a1111(image: Image.Image, path: str, basename: str = "", seed=None, prompt: str | None = None,
                     extension: str = "png", info=None, short_filename: bool = False, no_prompt: bool = False,
                     grid: bool = False, pnginfo_section_name: str = "parameters", p=None, existing_info=None,
                     forced_filename: str | None = None, suffix: str = "", save_to_dirs: bool | None = None):
    """A1111's save_image: `path`[/<directories pattern>]/NNNNN-<samples pattern>.<extension>; returns
    (fullfn, txt_fullfn), txt_fullfn when the save_txt setting wrote the infotext beside the image, else None."""
    callbacks = _callbacks()
    namegen = FilenameGenerator(p, seed, prompt, image, basename=basename)
    extension = extension.lstrip(".")
    if save_to_dirs is None:
        save_to_dirs = (grid and _opt("grid_save_to_dirs", True)) or \
                       (not grid and _opt("save_to_dirs", True) and not no_prompt)
    if save_to_dirs:
        dirname = namegen.apply(_opt("directories_filename_pattern", "") or "[date]").lstrip(" ").rstrip("\\ /")
        path = os.path.join(path, dirname)
    os.makedirs(path, exist_ok=True)
    with _save_lock:
        if forced_filename is not None:
            fullfn = os.path.join(path, f"{forced_filename}.{extension}")
        else:
            if short_filename or seed is None:
                decoration = ""
            elif _opt("save_to_dirs", True):
                decoration = _opt("samples_filename_pattern", "") or "[seed]"
            else:
                decoration = _opt("samples_filename_pattern", "") or "[seed]-[prompt_spaces]"
            decoration = namegen.apply(decoration) + suffix
            add_number = _opt("save_images_add_number", True) or decoration == ""
            if decoration and add_number:
                decoration = f"-{decoration}"
            if add_number:
                start = get_next_sequence_number(path, basename)
                for i in range(500):
                    stem = f"{start + i:05}" if basename == "" else f"{basename}-{start + i:04}"
                    fullfn = os.path.join(path, f"{stem}{decoration}.{extension}")
                    if not os.path.exists(fullfn):
                        break
            else:
                fullfn = os.path.join(path, f"{decoration}.{extension}")
        pnginfo = dict(existing_info or {})
        if info is not None:
            pnginfo[pnginfo_section_name] = info
        params = callbacks.ImageSaveParams(image, p, fullfn, pnginfo)
        callbacks.before_image_saved_callback(params)
        info = params.pnginfo.get(pnginfo_section_name, None)
        save_image_with_geninfo(params.image, info, params.filename, None, params.pnginfo, pnginfo_section_name)
    fullfn = params.filename
    txt_fullfn = None
    if _opt("save_txt", False) and info is not None:
        txt_fullfn = f"{os.path.splitext(fullfn)[0]}.txt"
        with atomic_file.replacing(Path(txt_fullfn), sync=False) as tmp:
            tmp.write_text(f"{info}\n", encoding="utf8")
    callbacks.image_saved_callback(params)
    return fullfn, txt_fullfn


def grid_rows(count: int, batch_size: int = 1, n_rows: int | None = None,
              prevent_empty: bool | None = None) -> int:
    """A1111's rows rule for a grid of `count` images: the n_rows setting when > 0, the batch size when 0, else
    about a square (-1); with grid_prevent_empty_spots the rows divide the count. Settings are read when not given."""
    n_rows = _opt("n_rows", -1) if n_rows is None else int(n_rows)
    if n_rows > 0:
        return n_rows
    if n_rows == 0:
        return max(1, batch_size)
    if _opt("grid_prevent_empty_spots", False) if prevent_empty is None else prevent_empty:
        rows = max(1, math.floor(math.sqrt(count)))
        while count % rows != 0:
            rows -= 1
        return rows
    return max(1, round(math.sqrt(count)))


def image_grid(imgs: list, batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """The images in one picture, `rows` rows (A1111's n_rows rule when None); extensions' image_grid callbacks may
    change the images, columns and rows first."""
    if rows is None:
        rows = grid_rows(len(imgs), batch_size)
    rows = max(1, min(rows, len(imgs)))
    cols = math.ceil(len(imgs) / rows)
    callbacks = _callbacks()
    params = callbacks.ImageGridLoopParams(imgs, cols, rows)
    callbacks.image_grid_callback(params)
    w, h = map(max, zip(*(img.size for img in params.imgs)))
    grid = Image.new("RGB", size=(params.cols * w, params.rows * h), color=_opt("grid_background_color", "#ffffff"))
    for i, img in enumerate(params.imgs):
        dx, dy = (w - img.width) // 2, (h - img.height) // 2
        grid.paste(img, box=(i % params.cols * w + dx, i // params.cols * h + dy))
    return grid


def check_grid_size(imgs: list) -> bool:
    """A1111's guard before a grid is made: False (and a log line) when the images together exceed the
    img_max_size_mp setting's megapixels, so the script returns the images without the grid."""
    megapixels = round(sum(img.width * img.height for img in imgs) / 1_000_000)
    limit = _opt("img_max_size_mp", 200)
    if megapixels > limit:
        import logging
        logging.getLogger("sd.images").warning("grid of %d MP not made: over the img_max_size_mp limit (%s MP)",
                                               megapixels, limit)
        return False
    return True


def flatten(img: Image.Image, bgcolor) -> Image.Image:
    """An RGB image: transparent parts over `bgcolor`."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int,
                 upscaler_name: str | None = None) -> Image.Image:
    """A1111's resize modes (0 just resize, 1 crop and resize, 2 resize and fill) with one of shared.sd_upscalers
    (Lanczos when None)."""
    from modules.engine.image_ops import resize_image as resize
    from modules.engine.run import IMAGE_UPSCALERS
    name = upscaler_name or "Lanczos"
    if resize_mode not in (0, 1, 2, 3):
        raise ValueError(f"resize_image: resize_mode must be 0, 1, 2 or 3, got {resize_mode!r}")
    if name not in IMAGE_UPSCALERS:
        from modules import shared
        model = next((u for u in shared.sd_upscalers if u.name == name), None)
        if model is None:
            raise ValueError(f"resize_image: unknown upscaler_name {upscaler_name!r}; choose one of "
                             f"{[u.name for u in shared.sd_upscalers]}")
        # A1111: an upscaler model enlarges the image first (when it must grow), Lanczos does the rest
        scale = max(width / im.width, height / im.height)
        if scale > 1.0:
            im = model.scaler.upscale(im, scale, model.data_path)
        return resize(resize_mode, im, width, height, Image.Resampling.LANCZOS)
    return resize(resize_mode, im, width, height, IMAGE_UPSCALERS[name] or Image.Resampling.LANCZOS)


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict]:
    """A1111's name for read_info: (infotext, the image's other text fields)."""
    return read_info(image)



# --- grids with labels (A1111's GridAnnotation / draw_grid_annotations / draw_prompt_matrix) ----------------------
class GridAnnotation:
    """One label line of a grid's row or column; `is_active=False` draws it grey and struck through (prompt
    matrix: a part that this column or row leaves out). `size` and `allowed_width` are filled while drawing."""

    def __init__(self, text: str = "", is_active: bool = True):
        self.text = text
        self.is_active = is_active
        self.size: tuple[int, int] | None = None
        self.allowed_width: int | None = None

    def __repr__(self) -> str:
        return f"GridAnnotation({self.text!r}, is_active={self.is_active})"


def get_font(fontsize: int):
    """The font for grid labels: the `font` setting's file when it loads, else Pillow's bundled scalable font (no
    system font is needed; A1111 looks for Roboto in Gradio's package)."""
    from PIL import ImageFont
    fontsize = max(1, int(fontsize))
    path = _opt("font", "")
    if path:
        try:
            return ImageFont.truetype(path, fontsize)
        except OSError:
            pass
    return ImageFont.load_default(fontsize)


def _wrap_words(draw, text: str, font, width: int) -> list[str]:
    """`text` broken between words into lines no wider than `width` (a single too-long word keeps its line)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts: list, ver_texts: list,
                          margin: int = 0) -> Image.Image:
    """`im`, a grid of `width`×`height` cells, with a label band above (one list of GridAnnotation per column)
    and to the left (one list per row), and `margin` pixels between cells. The sizes follow A1111: font size
    (width + height) // 25, the left band 3/4 of a cell wide when any row has text, the top band as tall as the
    tallest column label plus a font size; a band without text is left out."""
    from PIL import ImageColor, ImageDraw
    active = ImageColor.getcolor(_opt("grid_text_active_color", "#000000"), "RGB")
    inactive = ImageColor.getcolor(_opt("grid_text_inactive_color", "#999999"), "RGB")
    background = ImageColor.getcolor(_opt("grid_background_color", "#ffffff"), "RGB")
    cols, rows = im.width // width, im.height // height
    if cols != len(hor_texts):
        raise ValueError(f"draw_grid_annotations: the grid has {cols} columns, {len(hor_texts)} column labels")
    if rows != len(ver_texts):
        raise ValueError(f"draw_grid_annotations: the grid has {rows} rows, {len(ver_texts)} row labels")
    fontsize = (width + height) // 25
    spacing = fontsize // 2
    font = get_font(fontsize)
    pad_left = width * 3 // 4 if any(line.text for lines in ver_texts for line in lines) else 0
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1), background))
    for texts, allowed in [(t, width) for t in hor_texts] + [(t, pad_left) for t in ver_texts]:
        lines = [GridAnnotation(part, line.is_active) for line in texts
                 for part in _wrap_words(measure, line.text, font, allowed)]
        texts[:] = lines   # A1111 rewrites the caller's lists with the wrapped lines
        for line in texts:
            left, top, right, bottom = measure.multiline_textbbox((0, 0), line.text, font=font)
            line.size, line.allowed_width = (right - left, bottom - top), allowed
    hor_heights = [sum(line.size[1] + spacing for line in lines) - spacing for lines in hor_texts]
    ver_heights = [sum(line.size[1] for line in lines) for lines in ver_texts]
    pad_top = max(hor_heights) + spacing * 2 if sum(hor_heights) > 0 else 0
    result = Image.new("RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)),
                       background)
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))
    draw = ImageDraw.Draw(result)

    def draw_lines(x: float, y: float, lines: list) -> None:
        for line in lines:
            size, line_font = fontsize, font
            while line.allowed_width and size > 1 and \
                    draw.multiline_textbbox((0, 0), line.text, font=line_font)[2] > line.allowed_width:
                size -= 1   # a word wider than its band shrinks until it fits
                line_font = get_font(size)
            draw.multiline_text((x, y + line.size[1] / 2), line.text, font=line_font, anchor="mm", align="center",
                                fill=active if line.is_active else inactive)
            if not line.is_active:
                mid = y + line.size[1] // 2
                draw.line((x - line.size[0] // 2, mid, x + line.size[0] // 2, mid), fill=inactive, width=4)
            y += line.size[1] + spacing

    for col in range(cols):
        draw_lines(pad_left + (width + margin) * col + width / 2, pad_top / 2 - hor_heights[col] / 2,
                   hor_texts[col])
    for row in range(rows):
        draw_lines(pad_left / 2, pad_top + (height + margin) * row + height / 2 - ver_heights[row] / 2,
                   ver_texts[row])
    return result


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: list[str],
                       margin: int = 0) -> Image.Image:
    """Prompt matrix labels: the parts after the first (`all_prompts[1:]`), the first half across the top and the
    rest down the left; cell bit i set means part i is in (drawn black), else grey and struck through."""
    parts = all_prompts[1:]
    half = math.ceil(len(parts) / 2)
    across, down = parts[:half], parts[half:]
    hor = [[GridAnnotation(text, is_active=bool(pos & (1 << i))) for i, text in enumerate(across)]
           for pos in range(1 << len(across))]
    ver = [[GridAnnotation(text, is_active=bool(pos & (1 << i))) for i, text in enumerate(down)]
           for pos in range(1 << len(down))]
    return draw_grid_annotations(im, width, height, hor, ver, margin)
