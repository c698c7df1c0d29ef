"""Optical-flow ground-truth files: Middlebury ``.flo``, FlyingThings3D ``.pfm`` and KITTI 16-bit ``.png``.

Every reader returns channel-first float32 tensors (``[2, H, W]`` flow, channel 0 = x / horizontal, channel 1 =
y / vertical) and checks the file before trusting it: magic number or header, declared sizes against the file
length, PNG chunk CRCs. A missing file raises ``FileNotFoundError`` and a corrupt, truncated or wrong file raises
``ValueError``; both name the file. Every writer writes a temporary file in the target's directory, fsyncs it and
renames it over the target, so a crash never leaves a half-written flow file behind.

KITTI PNGs are written by a tiny encoder here (numpy + zlib): Pillow cannot write 16-bit RGB (it reads it as
8-bit, too), and the project should not need OpenCV for it. Reading checks the whole PNG here (chunk CRCs, header,
deflate stream, filter bytes) and undoes the row filters with numpy; files with Average / Paeth rows, as KITTI's
own, go to ``torchvision.io.decode_png`` for speed when it exists, and only after those checks, because libpng
crashes it on some corrupt data.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..serialization import atomic_write_bytes

PathLike = str | os.PathLike

FLO_MAGIC = 202021.25  # "PIEH" read as a little-endian float32
_FLO_HEADER = struct.Struct("<fii")  # magic, width, height
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PF / Pf, width, height, scale; exactly one whitespace byte ends the header (the data may start with a space byte).
_PFM_HEADER = re.compile(rb"(PF|Pf)\s+(\d+)\s+(\d+)\s+([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s")
_KITTI_SCALE = 64.0  # KITTI stores flow in 1/64 px steps ...
_KITTI_OFFSET = 2.0**15  # ... offset by 2**15 so that negative flow fits in uint16


# ---------------------------------------------------------------------------------------------------------- helpers


def _read_bytes(path: PathLike) -> bytes:
    """The whole file; ``FileNotFoundError`` naming it when it is missing (flow files are a few MB at most)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"flow file not found: {path}")
    return path.read_bytes()


def _check_chw(name: str, tensor: torch.Tensor, channels: tuple[int, ...]) -> np.ndarray:
    """``tensor [C, H, W]`` with ``C`` in ``channels`` and ``H, W >= 1`` as a float32 numpy array."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != 3 or tensor.shape[0] not in channels or tensor.shape[1] < 1 or tensor.shape[2] < 1:
        want = " or ".join(str(c) for c in channels)
        raise ValueError(f"{name} must have shape [{want}, H, W] with H, W >= 1, got {list(tensor.shape)}")
    return tensor.detach().to("cpu", torch.float32).numpy()


# ------------------------------------------------------------------------------------------------- Middlebury .flo


def read_flo(path: PathLike) -> torch.Tensor:
    """A Middlebury ``.flo`` file as ``flow [2, H, W]`` float32 (x, y).

    Layout: float32 magic 202021.25 ("PIEH"), int32 width, int32 height, then ``H * W`` interleaved (x, y)
    float32 pairs, row-major, all little endian.
    """
    data = _read_bytes(path)
    if len(data) < _FLO_HEADER.size:
        raise ValueError(f"{path}: truncated .flo file ({len(data)} bytes, the header alone is {_FLO_HEADER.size})")
    magic, width, height = _FLO_HEADER.unpack_from(data)
    if magic != FLO_MAGIC:
        raise ValueError(f"{path}: not a .flo file (magic number {magic!r}, expected {FLO_MAGIC})")
    if width < 1 or height < 1:
        raise ValueError(f"{path}: corrupt .flo header (width {width}, height {height})")
    expected = _FLO_HEADER.size + 8 * width * height
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "corrupt"
        raise ValueError(f"{path}: {kind} .flo file: a {width}x{height} flow needs {expected} bytes, "
                         f"the file has {len(data)}")
    flow = np.frombuffer(data, dtype="<f4", offset=_FLO_HEADER.size).reshape(height, width, 2)
    return torch.from_numpy(flow.transpose(2, 0, 1).astype(np.float32))  # astype copies: writable, native order


def write_flo(path: PathLike, flow: torch.Tensor) -> None:
    """Write ``flow [2, H, W]`` (x, y) as a Middlebury ``.flo`` file (atomically)."""
    array = _check_chw("flow", flow, (2,))
    _, height, width = array.shape
    body = np.ascontiguousarray(array.transpose(1, 2, 0), dtype="<f4").tobytes()
    atomic_write_bytes(path, _FLO_HEADER.pack(FLO_MAGIC, width, height) + body)


# ----------------------------------------------------------------------------------------------------- PFM (.pfm)


def read_pfm(path: PathLike) -> torch.Tensor:
    """A ``.pfm`` file (FlyingThings3D flow / disparity) as ``data [C, H, W]`` float32, top row first.

    Header: ``PF`` (3 channels) or ``Pf`` (1 channel), ``width height``, and a scale whose sign gives the byte order
    (negative = little endian). Rows are stored bottom-up, hence the flip. FlyingThings3D flow files are ``PF`` with
    a zero third channel; :func:`read_flow` keeps the first two.
    """
    data = _read_bytes(path)
    match = _PFM_HEADER.match(data)
    if match is None:
        raise ValueError(f"{path}: not a .pfm file (no 'PF'/'Pf', width, height, scale header)")
    kind, width, height, scale = match.group(1), int(match.group(2)), int(match.group(3)), float(match.group(4))
    if width < 1 or height < 1 or scale == 0:
        raise ValueError(f"{path}: corrupt .pfm header (width {width}, height {height}, scale {scale})")
    channels = 3 if kind == b"PF" else 1
    offset = match.end()
    expected = 4 * channels * width * height
    if len(data) - offset != expected:
        kind_ = "truncated" if len(data) - offset < expected else "corrupt"
        raise ValueError(f"{path}: {kind_} .pfm file: {channels}x{height}x{width} float32 data need {expected} "
                         f"bytes after the header, the file has {len(data) - offset}")
    dtype = "<f4" if scale < 0 else ">f4"
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(height, width, channels)[::-1]
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32))


def write_pfm(path: PathLike, data: torch.Tensor) -> None:
    """Write ``data [C, H, W]``, ``C`` 1 (``Pf``) or 3 (``PF``), as a little-endian ``.pfm`` file (atomically).

    To store a ``[2, H, W]`` flow the FlyingThings3D way, append a zero third channel.
    """
    array = _check_chw("data", data, (1, 3))
    channels, height, width = array.shape
    header = f"{'PF' if channels == 3 else 'Pf'}\n{width} {height}\n-1.0\n".encode("ascii")
    body = np.ascontiguousarray(array.transpose(1, 2, 0)[::-1], dtype="<f4").tobytes()  # bottom row first
    atomic_write_bytes(path, header + body)


# ------------------------------------------------------------------------------------------------ KITTI 16-bit PNG


def _png_chunks(path: PathLike, data: bytes) -> list[tuple[bytes, bytes]]:
    """The ``(type, payload)`` chunks of a PNG, CRCs checked, up to and including IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file (bad signature)")
    chunks, pos = [], len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ValueError(f"{path}: truncated PNG file (no IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length + 4
        if end > len(data):
            raise ValueError(f"{path}: truncated PNG file (chunk {kind!r} runs past the end of the file)")
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(kind + payload) != crc:
            raise ValueError(f"{path}: corrupt PNG file (CRC mismatch in chunk {kind!r})")
        chunks.append((kind, payload))
        pos = end
        if kind == b"IEND":
            return chunks


class PngImage(NamedTuple):
    """A PNG that :func:`check_png` accepted: its header and its decompressed (still filtered) image data."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlace: int
    raw: bytes


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel (3: palette index)
_PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_passes(width: int, height: int, bits_per_pixel: int, interlace: int) -> list[tuple[int, int]]:
    """``(rows, bytes per row)`` of each stored pass (filter bytes included): one pass, or Adam7's seven."""
    passes = ((0, 0, 1, 1),) if interlace == 0 else _ADAM7
    out = []
    for x0, y0, dx, dy in passes:
        w, h = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if w and h:  # an empty pass stores nothing, not even filter bytes
            out.append((h, 1 + -(-(w * bits_per_pixel) // 8)))
    return out


def check_png(path: PathLike, data: bytes) -> PngImage:
    """Check a PNG completely (any colour type, bit depth or interlacing) before libpng sees it.

    ``torchvision``'s libpng decoder crashes the process (segfault) on some corrupt image data instead of raising,
    so the chunk CRCs, the header, the deflate stream's length and every row filter byte are checked here; KITTI's
    flow reader and the flow tool's frame reader both go through it. A ``ValueError`` names ``path``.
    """
    chunks = _png_chunks(path, data)  # signature, chunk lengths and CRCs, IEND
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise ValueError(f"{path}: corrupt PNG file (the first chunk is not a valid IHDR)")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if not (1 <= width < 2**31 and 1 <= height < 2**31) or depth not in _PNG_BIT_DEPTHS.get(colour, ()):
        raise ValueError(f"{path}: corrupt PNG header (size {width}x{height}, colour type {colour}, bit depth {depth})")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise ValueError(f"{path}: corrupt PNG header (compression {compression}, filter method {filtering}, "
                         f"interlace {interlace})")
    kinds = [kind for kind, _ in chunks]
    idat = [i for i, kind in enumerate(kinds) if kind == b"IDAT"]
    if not idat or idat != list(range(idat[0], idat[-1] + 1)):
        raise ValueError(f"{path}: corrupt PNG file (image data missing or split by other chunks)")
    unknown = {k for k in kinds if k[:1].isupper() and k not in (b"IHDR", b"PLTE", b"IDAT", b"IEND")}
    if unknown:
        raise ValueError(f"{path}: corrupt PNG file (unknown critical chunks {sorted(unknown)})")
    if colour == 3 and b"PLTE" not in kinds:
        raise ValueError(f"{path}: corrupt PNG file (a palette image without a PLTE chunk)")
    passes = _png_passes(width, height, _PNG_CHANNELS[colour] * depth, interlace)
    expected = sum(rows * row_bytes for rows, row_bytes in passes)  # arithmetic: a corrupt header may say 2**31 rows
    decompressor = zlib.decompressobj()
    try:
        # One byte past the size, to tell a longer stream; capped, since a corrupt header may claim 2**64 bytes.
        raw = decompressor.decompress(b"".join(chunks[i][1] for i in idat), min(expected + 1, sys.maxsize))
    except zlib.error as err:
        raise ValueError(f"{path}: corrupt PNG image data ({err})") from None
    if len(raw) != expected or not decompressor.eof:
        found = "holds more" if len(raw) > expected else f"ends after {len(raw)}"
        raise ValueError(f"{path}: corrupt or truncated PNG image data: a {width}x{height} image needs {expected} "
                         f"bytes, the compressed stream {found}")
    starts, offset = [], 0
    for rows, row_bytes in passes:  # the stream's length matched, so there are at most len(raw) rows
        starts.append(offset + row_bytes * np.arange(rows))
        offset += rows * row_bytes
    filters = np.frombuffer(raw, dtype=np.uint8)[np.concatenate(starts)]
    if filters.max() > 4:
        raise ValueError(f"{path}: corrupt PNG image data (row filter type {int(filters.max())}, must be 0-4)")
    return PngImage(width, height, depth, colour, interlace, raw)



def _png_rgb16(path: PathLike, data: bytes) -> np.ndarray:
    """The pixels of a 16-bit RGB PNG as ``[H, W, 3]`` uint16, after :func:`check_png` (everything libpng would
    reject). The row filters are undone here with numpy, except that files with Average / Paeth rows (libpng's
    adaptive filtering, as in KITTI's own files) go to libpng when torchvision has it, since those filters need a
    byte-by-byte loop.
    """
    png = check_png(path, data)
    if png.bit_depth != 16 or png.colour_type != 2:
        raise ValueError(f"{path}: not a KITTI flow PNG (needs 16-bit RGB, got bit depth {png.bit_depth}, "
                         f"colour type {png.colour_type})")
    if png.interlace != 0:
        raise ValueError(f"{path}: unsupported PNG (interlaced; KITTI flow PNGs are not)")
    rows = np.frombuffer(png.raw, dtype=np.uint8).reshape(png.height, 1 + 6 * png.width)  # filter byte + 3 x 2 bytes
    decoded = _libpng_decode(data) if (rows[:, 0] >= 3).any() else None
    if decoded is None:
        decoded = _unfilter(rows, bytes_per_pixel=6).view(">u2").reshape(png.height, png.width, 3)
    return decoded.astype(np.uint16)


def _libpng_decode(data: bytes) -> np.ndarray | None:
    """``[H, W, 3]`` uint16 via ``torchvision.io.decode_png`` (only for checked data), None where it is missing.

    torchvision deprecates its image decoders, so :func:`_unfilter` is the fallback: same result, ~1 s slower per
    KITTI frame with Average / Paeth rows.
    """
    try:
        from torchvision.io import ImageReadMode, decode_png
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the fallback above covers its removal
        image = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    return image.permute(1, 2, 0).numpy()


def _unfilter(rows: np.ndarray, bytes_per_pixel: int) -> np.ndarray:
    """Undo PNG row filters: ``rows [H, 1 + stride]`` uint8 (filter byte first) -> ``[H, stride]`` uint8.

    None / Sub / Up are vectorised (uint8 arithmetic wraps mod 256 as PNG requires); Average and Paeth depend on
    the byte just decoded to their left, so they run byte by byte on Python ints (faster than numpy per pixel).
    """
    height, stride = rows.shape[0], rows.shape[1] - 1
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    bpp = bytes_per_pixel
    for r in range(height):
        kind, cur = int(rows[r, 0]), rows[r, 1:]
        if kind == 0:
            out[r] = cur
        elif kind == 1:  # Sub: running sum along each byte lane
            out[r] = np.cumsum(cur.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            out[r] = cur + prev
        else:
            line, above = bytearray(cur.tobytes()), prev.tobytes()
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = above[i]
                if kind == 3:  # Average
                    line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
                else:  # Paeth
                    c = above[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            out[r] = np.frombuffer(line, np.uint8)
        prev = out[r]
    return out


def read_kitti_flow(path: PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """A KITTI flow PNG as ``(flow [2, H, W] float32, valid [H, W] bool)``.

    The file is a 16-bit RGB PNG: R, G = ``flow * 64 + 2**15`` (x, y), B = 1 where the ground truth is valid.
    """
    rgb = _png_rgb16(path, _read_bytes(path))
    values = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32))  # uint16 is exact in float32
    flow = (values[:2] - _KITTI_OFFSET) / _KITTI_SCALE
    return flow, values[2] > 0


def _encode_png_rgb16(rgb: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of ``rgb [H, W, 3]`` uint16: every row with filter 0 (None), one zlib IDAT chunk."""
    height, width, _ = rgb.shape
    rows = np.ascontiguousarray(rgb, dtype=">u2").view(np.uint8).reshape(height, width * 6)  # 2 bytes a sample
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter byte per row

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16-bit, RGB, deflate, adaptive, no interlace
    return _PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_kitti_flow(path: PathLike, flow: torch.Tensor, valid: torch.Tensor) -> None:
    """Write ``flow [2, H, W]`` and ``valid [H, W]`` (bool or 0/1) as a KITTI 16-bit RGB PNG (atomically).

    Flow is rounded to KITTI's 1/64 px steps. Valid pixels must be finite and within [-512, 512 - 1/64]; invalid
    pixels are stored as (0, 0, 0), as in KITTI's own files, so they read back as flow -512 with ``valid`` false.
    """
    array = _check_chw("flow", flow, (2,))
    if not isinstance(valid, torch.Tensor) or tuple(valid.shape) != array.shape[1:]:
        shape = list(valid.shape) if isinstance(valid, torch.Tensor) else type(valid).__name__
        raise ValueError(f"valid must be a tensor of shape {list(array.shape[1:])} (the flow's H, W), got {shape}")
    mask = valid.detach().cpu().numpy() != 0
    encoded = np.rint(array.astype(np.float64) * _KITTI_SCALE + _KITTI_OFFSET)
    bad = mask & ~((encoded >= 0) & (encoded <= 65535)).all(axis=0)  # NaN fails both comparisons
    if bad.any():
        raise ValueError(f"flow has {int(bad.sum())} valid pixels that are not finite or outside the KITTI range "
                         f"[-512, {512 - 1 / 64}]")
    rgb = np.zeros((*mask.shape, 3), np.uint16)
    rgb[mask, :2] = encoded.transpose(1, 2, 0)[mask]
    rgb[mask, 2] = 1
    atomic_write_bytes(path, _encode_png_rgb16(rgb))


# --------------------------------------------------------------------------------------------------------- any file


def read_flow(path: PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Any supported flow file, by extension: ``(flow [2, H, W] float32, valid [H, W] bool or None)``.

    ``.flo`` and ``.pfm`` (the first two channels) have dense ground truth, so ``valid`` is None; ``.png`` is read as
    KITTI flow, with its validity mask.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".flo":
        return read_flo(path), None
    if suffix == ".pfm":
        data = read_pfm(path)
        if data.shape[0] < 2:
            raise ValueError(f"{path}: a 1-channel .pfm file (disparity?) holds no 2-channel flow")
        return data[:2].contiguous(), None
    if suffix == ".png":
        return read_kitti_flow(path)
    raise ValueError(f"{path}: unknown flow file extension {suffix!r} (expected .flo, .pfm or .png)")
