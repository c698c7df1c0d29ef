"""Optical-flow files: .flo / .pfm / KITTI .png round trips, hand-built files, and corrupt files named in errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_io.data import flow_io
from perceiver_io.data.flow_io import (
    read_flo,
    read_flow,
    read_kitti_flow,
    read_pfm,
    write_flo,
    write_kitti_flow,
    write_pfm,
)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _png(width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG built by hand from already-filtered scanlines (independent of the module's encoder)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------------------ round trips


def test_flo_round_trip(tmp_path: Path, gen: torch.Generator) -> None:
    flow = torch.randn(2, 5, 7, generator=gen) * 20
    write_flo(tmp_path / "a.flo", flow)
    back = read_flo(tmp_path / "a.flo")
    assert back.dtype == torch.float32 and back.shape == (2, 5, 7)
    torch.testing.assert_close(back, flow, rtol=0, atol=0)
    flow2, valid = read_flow(tmp_path / "a.flo")
    torch.testing.assert_close(flow2, flow, rtol=0, atol=0)
    assert valid is None
    assert [p.name for p in tmp_path.iterdir()] == ["a.flo"]  # no temporary file left behind


@pytest.mark.parametrize("channels", [1, 3])
def test_pfm_round_trip(tmp_path: Path, gen: torch.Generator, channels: int) -> None:
    data = torch.randn(channels, 4, 6, generator=gen) * 50
    write_pfm(tmp_path / "a.pfm", data)
    torch.testing.assert_close(read_pfm(tmp_path / "a.pfm"), data, rtol=0, atol=0)
    if channels == 3:
        flow, valid = read_flow(tmp_path / "a.pfm")
        torch.testing.assert_close(flow, data[:2], rtol=0, atol=0)
        assert valid is None
    else:
        with pytest.raises(ValueError, match="a.pfm"):
            read_flow(tmp_path / "a.pfm")


def test_kitti_round_trip(tmp_path: Path, gen: torch.Generator) -> None:
    flow = (torch.rand(2, 6, 9, generator=gen) * 2 - 1) * 300
    valid = torch.rand(6, 9, generator=gen) > 0.4
    write_kitti_flow(tmp_path / "a.png", flow, valid)
    back, back_valid = read_kitti_flow(tmp_path / "a.png")
    assert back.dtype == torch.float32 and back.shape == (2, 6, 9) and back_valid.dtype == torch.bool
    assert torch.equal(back_valid, valid)
    assert (back - flow)[:, valid].abs().max() <= 1 / 128 + 1e-6  # 1/64 px quantisation
    assert (back[:, ~valid] == -512).all()  # invalid pixels are stored as (0, 0, 0), as in KITTI's files
    flow2, valid2 = read_flow(tmp_path / "a.png")
    assert torch.equal(flow2, back) and torch.equal(valid2, valid)
    # Pillow cannot check the 16-bit values, but it must see a well-formed 16-bit-per-sample RGB PNG.
    with Image.open(tmp_path / "a.png") as im:
        im.load()
        assert im.size == (9, 6)


def test_kitti_write_rejects_out_of_range(tmp_path: Path) -> None:
    flow = torch.zeros(2, 2, 2)
    flow[0, 1, 1] = 600.0
    valid = torch.ones(2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="flow"):
        write_kitti_flow(tmp_path / "a.png", flow, valid)
    valid[1, 1] = False  # an invalid pixel may hold anything
    write_kitti_flow(tmp_path / "a.png", flow, valid)
    with pytest.raises(ValueError, match="valid"):
        write_kitti_flow(tmp_path / "b.png", flow, valid[:1])


def test_writers_reject_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flow"):
        write_flo(tmp_path / "a.flo", torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="data"):
        write_pfm(tmp_path / "a.pfm", torch.zeros(2, 2, 2))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------ hand-built files


def test_hand_built_flo(tmp_path: Path) -> None:
    height, width = 2, 3
    # Interleaved (x, y) pairs, row-major: pixel (r, c) = (10 r + c, -(10 r + c) - 0.5).
    pairs = [v for r in range(height) for c in range(width) for v in (10 * r + c, -(10 * r + c) - 0.5)]
    data = struct.pack("<fii", 202021.25, width, height) + struct.pack(f"<{len(pairs)}f", *pairs)
    assert data[:4] == b"PIEH"
    (tmp_path / "h.flo").write_bytes(data)
    flow = read_flo(tmp_path / "h.flo")
    expected_x = torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])
    torch.testing.assert_close(flow, torch.stack([expected_x, -expected_x - 0.5]), rtol=0, atol=0)


def test_hand_built_big_endian_pfm(tmp_path: Path) -> None:
    height, width = 2, 3
    # Rows are stored bottom-up: the first stored row is the image's bottom row (values 100..).
    stored = [[[100 * (height - 1 - i) + 10 * c + ch for ch in range(3)] for c in range(width)] for i in range(height)]
    values = [v for row in stored for pixel in row for v in pixel]
    data = f"PF\n{width} {height}\n1.0\n".encode() + struct.pack(f">{len(values)}f", *values)  # scale > 0: big endian
    (tmp_path / "h.pfm").write_bytes(data)
    pfm = read_pfm(tmp_path / "h.pfm")
    assert pfm.shape == (3, height, width)
    for ch in range(3):
        for r in range(height):
            for c in range(width):
                assert pfm[ch, r, c] == 100 * r + 10 * c + ch
    # Grey big-endian, header tokens on one line as some writers put them.
    (tmp_path / "g.pfm").write_bytes(b"Pf 2 1 1\n" + struct.pack(">2f", 1.5, -2.0))
    torch.testing.assert_close(read_pfm(tmp_path / "g.pfm"), torch.tensor([[[1.5, -2.0]]]))


def _filter_rows(rows: np.ndarray, kinds: list[int], bpp: int = 6) -> bytes:
    """PNG-filter ``rows [H, stride]`` uint8 with the given filter type per row (encoding needs no loop)."""
    raw = rows.astype(np.int32)
    lines = []
    for r, kind in enumerate(kinds):
        x = raw[r]
        a = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])  # left
        b = raw[r - 1] if r else np.zeros_like(x)  # above
        c = np.concatenate([np.zeros(bpp, np.int32), b[:-bpp]])  # above left
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = [np.zeros_like(x), a, b, (a + b) // 2, paeth][kind]
        lines.append(bytes([kind]) + ((x - pred) % 256).astype(np.uint8).tobytes())
    return b"".join(lines)


@pytest.mark.parametrize("decoder", ["libpng", "numpy"])
def test_hand_built_filtered_kitti_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str) -> None:
    """A KITTI file using all five PNG row filters (libpng's kind, not what write_kitti_flow writes)."""
    if decoder == "numpy":  # as if torchvision had dropped its image decoders
        monkeypatch.setattr(flow_io, "_libpng_decode", lambda data: None)
    kinds = [0, 1, 2, 3, 4, 4, 3, 1, 2, 0]
    height, width = len(kinds), 5
    rng = np.random.default_rng(0)
    rgb = np.zeros((height, width, 3), np.uint16)
    rgb[..., :2] = rng.integers(0, 65536, size=(height, width, 2))
    rgb[..., 2] = rng.integers(0, 2, size=(height, width))
    rows = rgb.astype(">u2").view(np.uint8).reshape(height, width * 6)
    (tmp_path / "k.png").write_bytes(_png(width, height, 16, 2, _filter_rows(rows, kinds)))
    flow, valid = read_kitti_flow(tmp_path / "k.png")
    expected = (torch.from_numpy(rgb[..., :2].astype(np.float32)).permute(2, 0, 1) - 32768) / 64
    torch.testing.assert_close(flow, expected, rtol=0, atol=0)
    assert torch.equal(valid, torch.from_numpy(rgb[..., 2] > 0))


# ---------------------------------------------------------------------------------------------------- broken files


def test_missing_files_are_named(tmp_path: Path) -> None:
    for name in ("nope.flo", "nope.pfm", "nope.png"):
        with pytest.raises(FileNotFoundError, match=name):
            read_flow(tmp_path / name)


def test_bad_flo_files_are_named(tmp_path: Path) -> None:
    write_flo(tmp_path / "good.flo", torch.zeros(2, 3, 4))
    good = (tmp_path / "good.flo").read_bytes()
    cases = {
        "wrong_magic.flo": struct.pack("<f", 1.0) + good[4:],
        "truncated.flo": good[:-4],
        "header_only.flo": good[:6],
        "too_long.flo": good + b"\0" * 8,
        "zero_size.flo": struct.pack("<fii", 202021.25, 0, 3),
        "empty.flo": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            read_flo(tmp_path / name)


def test_bad_pfm_files_are_named(tmp_path: Path) -> None:
    write_pfm(tmp_path / "good.pfm", torch.zeros(3, 2, 2))
    good = (tmp_path / "good.pfm").read_bytes()
    cases = {
        "wrong_magic.pfm": b"P6" + good[2:],
        "truncated.pfm": good[:-1],
        "no_scale.pfm": b"PF\n2 2\n",
        "zero_scale.pfm": b"Pf\n1 1\n0\n" + b"\0" * 4,
        "text.pfm": b"hello world",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            read_pfm(tmp_path / name)


def test_bad_kitti_files_are_named(tmp_path: Path) -> None:
    write_kitti_flow(tmp_path / "good.png", torch.zeros(2, 3, 4), torch.ones(3, 4, dtype=torch.bool))
    good = (tmp_path / "good.png").read_bytes()
    idat = good.index(b"IDAT")
    (length,) = struct.unpack(">I", good[idat - 4:idat])
    payload = bytearray(good[idat + 4:idat + 4 + length])
    payload[2:10] = b"\xff" * 8  # garbage deflate data with a correct CRC: must not reach libpng
    garbage = good[:idat + 4] + bytes(payload) + struct.pack(">I", zlib.crc32(b"IDAT" + payload)) + good[
        idat + 8 + length:]
    flipped = bytearray(good)
    flipped[idat + 6] ^= 0xFF  # a flipped bit: CRC mismatch
    eight_bit = np.zeros((3, 4, 3), np.uint8)
    cases = {
        "truncated.png": good[:-20],
        "not_png.png": b"GIF89a" + good[6:],
        "garbage_idat.png": garbage,
        "bad_crc.png": bytes(flipped),
        "short_stream.png": _png(4, 3, 16, 2, b"\0" * (1 + 24)),  # one row of three
        "bad_filter.png": _png(4, 3, 16, 2, (b"\x07" + b"\0" * 24) * 3),
        "grey16.png": _png(4, 3, 16, 0, (b"\0" + b"\0" * 8) * 3),
        "empty.png": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    Image.fromarray(eight_bit).save(tmp_path / "rgb8.png")
    for name in (*cases, "rgb8.png"):
        with pytest.raises(ValueError, match=name):
            read_kitti_flow(tmp_path / name)


def test_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "a.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="a.npy"):
        read_flow(tmp_path / "a.npy")
