"""Model download used by the launcher.

The launcher imports this module before the virtual environment has its
packages, so only the standard library is imported at module level; tqdm is
used for the console progress bar when it happens to be importable.

Downloads go to ``<dest>.part`` and are renamed onto ``dest`` only after the
whole file is there and its checksum (when one is known) matches, so an
interrupted or corrupted download never looks like a usable model; a later
call resumes the ``.part`` file with an HTTP Range request instead of fetching
several gigabytes again.

Proxies and mirrors (modules/net_policy.py): requests go through an opener that
reads http_proxy/https_proxy/no_proxy at call time, ``HF_ENDPOINT`` and the
GitHub mirror rewrite the URL, and ``network_reachable`` probes the proxy when
one applies (behind a proxy the real host is often not reachable directly).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import BinaryIO, Optional

from modules import atomic_file, net_policy  # standard library only, like this module

__all__ = [
    "DownloadError",
    "download_file",
    "network_reachable",
    "SD15_URL",
    "SD15_FILENAME",
    "SD15_SHA256",
]

# A1111 fetches this checkpoint on first start when no model is present.
SD15_URL = (
    "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/"
    "resolve/main/v1-5-pruned-emaonly.safetensors"
)
SD15_FILENAME = "v1-5-pruned-emaonly.safetensors"
SD15_SHA256 = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"

# Some hosts (and CDNs behind them) reject urllib's default agent.
USER_AGENT = "sd-webui-downloader/1.0 (+python-urllib)"

# How often a download may start over from byte 0 because the server's answer
# to a Range request could not be appended to the .part file.
_MAX_RESTARTS = 2

_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


class DownloadError(Exception):
    """A download failed; the message is one line naming the URL or the file.

    The launcher shows this message to the user as is, so it has to say which
    download went wrong and why without a traceback.
    """


def _fmt_seconds(timeout: float) -> str:
    return f"{timeout:g} s"


def _is_timeout(err: BaseException) -> bool:
    if isinstance(err, (socket.timeout, TimeoutError)):
        return True
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, (socket.timeout, TimeoutError)):
        return True
    return False


def _sha256_of(path: pathlib.Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_content_range(value: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    """Return (first byte, total size) from a Content-Range header, None where unknown."""
    if not value:
        return None, None
    match = _CONTENT_RANGE_RE.match(value)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


class _Progress:
    """Console progress: tqdm when available, otherwise a throttled line on stderr."""

    def __init__(self, name: str, total: Optional[int], initial: int, enabled: bool) -> None:
        self._bar = None
        self._enabled = enabled
        self._name = name
        self._total = total
        self._done = initial
        self._last_print = 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm  # optional: absent before the venv is set up
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(
                total=total,
                initial=initial,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                file=sys.stderr,
                leave=True,
            )

    def update(self, n: int) -> None:
        if not self._enabled:
            return
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_print >= 0.5:
            self._last_print = now
            self._print_line()

    def _print_line(self) -> None:
        mib = self._done / (1 << 20)
        if self._total:
            pct = 100.0 * self._done / self._total
            line = f"\r{self._name}: {mib:.1f} / {self._total / (1 << 20):.1f} MiB ({pct:.0f}%)"
        else:
            line = f"\r{self._name}: {mib:.1f} MiB"
        sys.stderr.write(line)
        sys.stderr.flush()

    def close(self) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        self._print_line()
        sys.stderr.write("\n")
        sys.stderr.flush()


class _RangeNotSatisfiable(Exception):
    """Internal signal: the server answered 416 to our Range request."""

    def __init__(self, total: Optional[int]) -> None:
        super().__init__(total)
        self.total = total


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    """Start the request, turning every failure into a one-line DownloadError.

    A 416 answer to a Range request is not a failure (the .part may already be
    complete), so it is reported separately as _RangeNotSatisfiable.
    """
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return net_policy.opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        try:
            if err.code == 416 and offset > 0:
                _, total = _parse_content_range(err.headers.get("Content-Range") if err.headers else None)
                raise _RangeNotSatisfiable(total)
            reason = err.reason or http.client.responses.get(err.code) or "error"
            raise DownloadError(f"HTTP {err.code} {reason} for {url}") from None
        finally:
            err.close()
    except Exception as err:  # URLError, raw socket errors, malformed responses
        if _is_timeout(err):
            raise DownloadError(f"timed out after {_fmt_seconds(timeout)} waiting for {url}") from None
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise DownloadError(f"could not connect to {url}: {reason}") from None


def _stream(
    response: http.client.HTTPResponse,
    out: BinaryIO,
    url: str,
    part: pathlib.Path,
    timeout: float,
    chunk_size: int,
    progress: _Progress,
) -> int:
    written = 0
    while True:
        try:
            block = response.read(chunk_size)
        except Exception as err:
            if _is_timeout(err):
                raise DownloadError(
                    f"timed out after {_fmt_seconds(timeout)} waiting for {url}; "
                    f"the partial file {part} is kept for resuming"
                ) from None
            raise DownloadError(
                f"connection to {url} failed ({type(err).__name__}: {err}); "
                f"the partial file {part} is kept for resuming"
            ) from None
        if not block:
            return written
        try:
            out.write(block)
        except OSError as err:
            raise DownloadError(f"could not write {part}: {err.strerror or err}") from None
        written += len(block)
        progress.update(len(block))


def download_file(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    chunk_size: int = 1 << 20,
) -> pathlib.Path:
    """Fetch ``url`` into ``dest`` so that ``dest`` only ever holds a complete, verified file.

    Data lands in ``dest + ".part"`` first, which lets an interrupted download
    resume where it stopped (HTTP Range) and keeps a half-written model from
    being picked up by the loader.  When ``sha256`` is given the finished file
    is checked against it and thrown away on mismatch, since resuming a corrupt
    file would only produce another corrupt file.  An existing ``dest`` that
    matches (or any existing ``dest`` when no hash is given) is returned
    without touching the network so repeated launches stay offline-friendly.

    ``timeout`` bounds each wait on the network (connect and every read), not
    the whole transfer, so slow but steady downloads of large models succeed.

    Raises DownloadError with a one-line message on HTTP errors, timeouts,
    connection failures, truncated transfers and checksum mismatches.
    """
    url = net_policy.rewrite_url(url)
    dest_path = pathlib.Path(dest)
    part = pathlib.Path(os.fspath(dest) + ".part")
    expected = sha256.strip().lower() if sha256 else None

    if dest_path.is_file():
        if expected is None or _sha256_of(dest_path, chunk_size) == expected:
            return dest_path
    if dest_path.is_dir():
        # Said now rather than after gigabytes: the final move could not replace a folder.
        raise DownloadError(f"{dest_path} is a folder, not a file name to download to")

    try:
        dest_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"could not create the folder for {dest_path}: {err.strerror or err}") from None

    restarts = 0
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        try:
            response = _open(url, offset, timeout)
        except _RangeNotSatisfiable as err:
            # The .part is at least as long as the file: complete if the sizes
            # agree (or the server does not say); otherwise it is junk.
            if err.total is not None and err.total != offset:
                if restarts >= _MAX_RESTARTS:
                    raise DownloadError(
                        f"{part} is {offset} bytes but {url} is {err.total} bytes; the partial file was removed"
                    ) from None
                restarts += 1
                part.unlink(missing_ok=True)
                continue
            break

        with response:
            status = response.status
            if status == 206 and offset > 0:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start is not None and start != offset:
                    # Not the piece we asked for; appending it would corrupt the file.
                    if restarts >= _MAX_RESTARTS:
                        raise DownloadError(
                            f"{url} answered a request for bytes from {offset} with bytes from {start}"
                        )
                    restarts += 1
                    part.unlink(missing_ok=True)
                    continue
                mode = "ab"
                if total is None:
                    length = response.headers.get("Content-Length")
                    total = offset + int(length) if length and length.isdigit() else None
            elif 200 <= status < 300:
                # Fresh download, or the server ignored our Range: start over.
                offset = 0
                mode = "wb"
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            else:
                raise DownloadError(f"HTTP {status} {response.reason} for {url}")

            bar = _Progress(dest_path.name, total, offset, progress)
            try:
                try:
                    out = open(part, mode)
                except OSError as err:
                    raise DownloadError(f"could not write {part}: {err.strerror or err}") from None
                with out:
                    _stream(response, out, url, part, timeout, chunk_size, bar)
            finally:
                bar.close()

        size = part.stat().st_size
        if total is not None and size != total:
            if size > total:
                part.unlink(missing_ok=True)
                raise DownloadError(
                    f"{url} sent more data than announced ({size} > {total} bytes); the partial file was removed"
                )
            raise DownloadError(
                f"incomplete download of {url}: got {size} of {total} bytes; "
                f"the partial file {part} is kept for resuming"
            )
        break

    if expected is not None:
        actual = _sha256_of(part, chunk_size)
        if actual != expected:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"sha256 mismatch for {dest_path}: expected {expected}, got {actual}; the partial file was removed"
            )

    # The verified .part becomes dest through atomic_file.replacing, like every file the app writes: synced before
    # the rename (a power cut must not leave a truncated file under the model's name) and with the umask's mode even
    # when the .part was begun under another umask. The .part itself stays a fixed name so that it can be resumed.
    try:
        with atomic_file.replacing(dest_path) as tmp:
            os.replace(part, tmp)
    except OSError as err:
        raise DownloadError(
            f"could not move the finished download to {dest_path}: {err.strerror or err}; it has to be fetched again"
        ) from None
    return dest_path


def network_reachable(url: str, timeout: float = 5.0) -> bool:
    """Tell whether ``url``'s host accepts TCP connections, answering within about ``timeout``.

    Used to decide quickly whether to attempt a download at all.  Socket
    timeouts do not cover DNS resolution, which can hang far longer on a
    machine without network, so the lookup and connect run in a daemon thread
    that is simply abandoned when it takes too long. The host probed is the
    one a download would connect to first: the mirror's, or the proxy's.
    """
    host, port = net_policy.connect_target(net_policy.rewrite_url(url))
    if not host or not port:
        return False

    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except Exception:
            result.append(False)

    worker = threading.Thread(target=probe, name="network-reachable-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])
