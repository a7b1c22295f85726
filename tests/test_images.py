"""Tests for huse_core.data.images: decoding awkward product photos and the decode_many cache."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from huse_core.data import images
from huse_core.data.images import ImageError, decode_image, decode_many

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def near(pixel, colour, tol=40) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, dtype=int) - np.asarray(colour)) <= tol))


def tall_red_top(w: int = 40, h: int = 80) -> Image.Image:
    img = Image.new("RGB", (w, h), BLUE)
    img.paste(RED, (0, 0, w, h // 2))
    return img


@pytest.mark.parametrize("orientation, stored", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, orientation, stored):
    # A camera stores the pixels sideways and records how to turn them in the EXIF orientation tag.
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    tall_red_top().transpose(stored).save(path, exif=exif.tobytes(), quality=95)
    assert Image.open(path).size == (80, 40)  # stored landscape
    out = decode_image(path, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert near(out[4, 16], RED) and near(out[28, 16], BLUE)  # red on top: upright
    assert near(out[16, 1], WHITE) and near(out[16, 30], WHITE)  # tall -> padded left and right


def test_palette_png_with_transparency_is_composited_on_white(tmp_path):
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    img.paste(1, (10, 0, 20, 20))
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    out = decode_image(path, 20)
    assert near(out[10, 2], WHITE, 5) and near(out[10, 17], RED, 5)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    out = decode_image(path, 16)
    assert np.all(np.abs(out.astype(int) - 128) <= 2)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    assert near(decode_image(path, 16)[8, 8], RED, 60)


def test_la_transparent_and_opaque():
    img = Image.new("LA", (20, 20), (0, 0))
    img.paste((0, 255), (10, 0, 20, 20))
    out = decode_image(img, 20)
    assert near(out[10, 2], WHITE, 2) and near(out[10, 17], (0, 0, 0), 2)


@pytest.mark.parametrize("mode", ["1", "L", "I", "F", "RGBA", "P"])
def test_other_modes_give_rgb(mode):
    out = decode_image(Image.new(mode, (12, 6)), 12)
    assert out.shape == (12, 12, 3) and out.dtype == np.uint8


def test_animated_gif_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert near(decode_image(path, 10)[5, 5], RED, 10)


def test_bytes_input():
    buf = io.BytesIO()
    Image.new("RGB", (10, 10), BLUE).save(buf, format="PNG")
    assert near(decode_image(buf.getvalue(), 8)[4, 4], BLUE, 2)


def _jpeg_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("truncated.jpg", _jpeg_bytes()[:600], "truncated"),
        ("notes.jpg", b"this is not a photo, it is a text file\n" * 5, "not an image"),
    ],
)
def test_broken_files_raise_image_error_naming_file(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError) as err:
        decode_image(path, 32)
    assert name in str(err.value) and reason in str(err.value)
    assert isinstance(err.value, ValueError)


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        decode_image(tmp_path / "nope.jpg", 32)


def test_decompression_bomb_header_is_refused_quickly(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), RED).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    # IHDR: length(4) 'IHDR'(4) width(4) height(4) ... CRC over type+data (17 bytes) right after.
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too large: 30000x30000 px") as err:
        decode_image(path, 64)
    assert time.perf_counter() - start < 2
    assert "bomb.png" in str(err.value)
    with pytest.raises(ImageError, match="too large: 30000x30000 px"):
        decode_image(bytes(data), 64)  # from memory too


def test_large_non_jpeg_over_limit_is_refused(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="too large: 20x20 px"):
        decode_image(Image.new("RGB", (20, 20)), 8)


def test_big_jpeg_decodes_fast_with_aspect(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), BLUE).save(path, quality=85)
    start = time.perf_counter()
    out = decode_image(path, 64)
    assert time.perf_counter() - start < 1.5  # draft() decodes at 1/8 scale
    assert out.shape == (64, 64, 3)
    # 6000x4000 -> 64x43: white bands above and below, blue in the middle
    assert near(out[32, 32], BLUE, 10) and near(out[0, 32], WHITE, 2) and near(out[63, 32], WHITE, 2)


def test_aspect_ratio_preserved_with_white_padding():
    out = decode_image(Image.new("RGB", (100, 50), RED), 32)
    red_rows = np.flatnonzero(np.all(np.abs(out[:, 16].astype(int) - RED) < 30, axis=1))
    assert red_rows.min() == 8 and red_rows.max() == 23  # 32x16 band, centred
    assert np.all(out[:7] == 255) and np.all(out[25:] == 255)
    assert near(decode_image(Image.new("RGB", (3, 9), BLUE), 18)[9, 9], BLUE, 2)  # small images scale up


def test_bad_size_argument():
    with pytest.raises(ValueError, match="positive"):
        decode_image(Image.new("RGB", (4, 4)), 0)


def test_decode_many_reports_errors_and_caches(tmp_path, monkeypatch):
    good1, good2, bad = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.jpg"
    Image.new("RGB", (10, 10), RED).save(good1)
    Image.new("RGB", (10, 20), BLUE).save(good2)
    bad.write_text("not an image")
    paths = [str(good1), str(bad), str(good2), str(tmp_path / "missing.png")]
    cache = tmp_path / "cache"
    pixels, ok, errors = decode_many(paths, 16, cache_dir=cache, progress=False)
    assert pixels.shape == (4, 16, 16, 3) and pixels.dtype == np.uint8
    assert ok.tolist() == [True, False, True, False]
    assert not pixels[1].any() and not pixels[3].any()  # failed rows are zeros
    assert len(errors) == 2 and errors[0].startswith(f"{bad}: ") and "not an image" in errors[0]
    assert errors[1].startswith(str(tmp_path / "missing.png"))
    assert len(list(cache.glob("pixels-16-*.npy"))) == 1 and not list(cache.glob("*.tmp"))

    def boom(*_a, **_k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(images, "decode_image", boom)
    pixels2, ok2, errors2 = decode_many(paths, 16, cache_dir=cache, progress=False)
    assert np.array_equal(pixels, pixels2) and ok2.tolist() == ok.tolist() and errors2 == errors
    assert isinstance(pixels2, np.memmap) and not pixels2.flags.writeable  # read from disk, not held in RAM

    # A changed file (or size) is a different key: decoding happens again.
    monkeypatch.undo()
    Image.new("RGB", (12, 12), BLUE).save(good1)
    pixels3, _, _ = decode_many(paths, 16, cache_dir=cache, progress=False)
    assert near(pixels3[0, 8, 8], BLUE, 2)
    assert decode_many(paths, 8, cache_dir=cache, progress=False)[0].shape == (4, 8, 8, 3)


def test_decode_many_without_cache_and_empty():
    pixels, ok, errors = decode_many([], 8, progress=False)
    assert pixels.shape == (0, 8, 8, 3) and ok.shape == (0,) and errors == []


def test_decode_many_accepts_paths(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (4, 4), RED).save(p)
    pixels, ok, _ = decode_many([Path(p)], 4, progress=False)
    assert ok.all() and near(pixels[0, 2, 2], RED, 2)
