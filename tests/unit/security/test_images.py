"""The one image decoder (`vitexport.security.images`): the accepted formats decode, every other format is refused
by name before Pillow opens it, sizes are checked from the header, crafted EXIF and truncated files are one line."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers.images import CRAFTED_EXIF, with_exif
from vitexport._util.errors import InputError
from vitexport.security import images
from vitexport.security.images import (
    ACCEPTED_FORMATS,
    KINDS,
    decode_bytes,
    header_size,
    image_size,
    read_image,
    to_pixels,
)
from vitexport.security.sniff import IMAGE_KINDS, ROLES, sniff
from vitexport.serving.preprocess import Preprocess, to_model_input

LOSSY = ("JPEG",)


def gradient(h: int, w: int, mode: str) -> Image.Image:
    """A smooth, non-square test image of 6 levels per channel (GIF's palette holds all 216 colours exactly; JPEG
    keeps it within a few levels)."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 5 // (w - 1), y * 5 // (h - 1), (x + y) * 5 // (h + w - 2)], -1).astype(np.uint8) * 51
    return Image.fromarray(rgb).convert(mode)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    best = {"WEBP": {"lossless": True}, "JPEG": {"quality": 95, "subsampling": 0}}.get(fmt, {})
    img.save(buf, format=fmt, **best, **kw)
    return buf.getvalue()


def one_line_error(exc: pytest.ExceptionInfo, *fragments: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and all(f in text for f in fragments), text
    return text


# ---------------------------------------------------------------------------
# one list
# ---------------------------------------------------------------------------
def test_sniff_kinds_and_messages_are_the_decoder_formats() -> None:
    assert IMAGE_KINDS == set(KINDS.values()) and set(KINDS) == set(ACCEPTED_FORMATS)
    assert ROLES["image"].accepts == IMAGE_KINDS
    assert all(fmt.lower() in images.ACCEPTED_TEXT.lower() for fmt in ACCEPTED_FORMATS)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_every_accepted_format_decodes_from_a_file_and_from_bytes(tmp_path: Path, fmt: str, mode: str) -> None:
    img = gradient(13, 21, mode)
    data = encode(img, fmt)
    path = tmp_path / "img"  # no suffix: the bytes decide
    path.write_bytes(data)
    assert sniff(path).kind == KINDS[fmt]
    assert image_size(path) == (13, 21)
    want = np.asarray(img, dtype=np.int16)
    for decoded in (read_image(path), decode_bytes(data)):
        assert decoded.size == (21, 13)
        got = to_pixels(decoded, 1 if mode == "L" else 3)
        assert got.shape == (13, 21, 1 if mode == "L" else 3)
        diff = np.abs(got.astype(np.int16).reshape(want.shape) - want)
        if fmt in LOSSY:  # ringing at the level steps, the image itself intact
            assert diff.mean() < 3 and diff.max() <= 32, (fmt, mode, diff.mean(), diff.max())
        else:
            assert diff.max() == 0, (fmt, mode, diff.max())


# ---------------------------------------------------------------------------
# every other format: refused by name, never opened by its plugin
# ---------------------------------------------------------------------------
def _other_formats() -> list[str]:
    Image.init()
    return sorted(f for f in Image.SAVE if f not in ACCEPTED_FORMATS and f != "MPO")  # MPO is a JPEG


def _write(fmt: str) -> bytes | None:
    for mode in ("RGB", "L", "1", "P"):
        try:
            return encode(Image.new(mode, (16, 16)), fmt)
        except (OSError, ValueError, KeyError):  # this format cannot write this mode (or needs a plugin)
            continue
    return None


@pytest.fixture
def plugins_must_not_open(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Pillow plugin outside ACCEPTED_FORMATS replaced by one that records that it was asked."""
    opened: list[str] = []
    Image.init()
    for fmt, (_factory, accept) in list(Image.OPEN.items()):
        if fmt not in ACCEPTED_FORMATS:
            def refuse(*args, _fmt=fmt, **kwargs):
                opened.append(_fmt)
                raise SyntaxError("opened by a refused plugin")
            monkeypatch.setitem(Image.OPEN, fmt, (refuse, accept))
    return opened


NAMED_ELSEWHERE = {"PDF": "PDF"}  # Pillow writes PDF but has no reader: named by its magic


@pytest.mark.parametrize("fmt", _other_formats())
def test_other_formats_are_refused_by_name_even_when_named_png(tmp_path: Path, fmt: str,
                                                                plugins_must_not_open: list[str]) -> None:
    data = _write(fmt)
    if data is None:
        pytest.skip(f"this Pillow cannot write {fmt} from a small image (it needs a plugin or another mode)")
    path = tmp_path / "digit.png"
    path.write_bytes(data)
    named = images.other_format(data[:64])
    for call in (lambda: read_image(path), lambda: image_size(path), lambda: decode_bytes(data)):
        with pytest.raises(InputError) as exc:
            call()
        text = one_line_error(exc)
        if named:
            assert f"{named} file, which vitexport does not decode" in text and "convert it to PNG" in text, text
        else:  # Pillow has no prefix check for it (TGA, IM, SPIDER, ...): still refused
            assert "PNG, JPEG, WebP, BMP, GIF, TIFF or PPM" in text, text
    assert plugins_must_not_open == []
    if fmt in ("EPS", "PDF", "ICO", "PCX", "SGI"):  # formats with a reliable prefix check are named
        assert named == fmt


def test_eps_would_reach_ghostscript_without_the_format_list(tmp_path: Path, monkeypatch) -> None:
    """The failure the list prevents: Pillow, asked to open anything, hands an EPS file to Ghostscript."""
    from PIL import EpsImagePlugin

    calls: list[str] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript",
                        lambda *a, **k: calls.append("gs") or Image.new("RGB", (10, 10)).im)
    path = tmp_path / "digit.png"
    Image.new("RGB", (10, 10)).save(path, format="EPS")
    with Image.open(path) as img:  # no formats= : EPS accepted
        img.load()
    assert calls == ["gs"]
    calls.clear()
    with pytest.raises(InputError, match="EPS file"):
        read_image(path)
    assert calls == []


# ---------------------------------------------------------------------------
# sizes before decoding
# ---------------------------------------------------------------------------
def png_declaring(tmp_path: Path, h: int, w: int) -> Path:
    """A 1x1 PNG whose header declares h x w (CRC fixed): a few bytes that would inflate to h*w pixels."""
    path = tmp_path / f"bomb-{h}x{w}.png"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    raw[16:24] = struct.pack(">II", w, h)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every image Pillow decodes, by size."""
    seen: list[tuple[int, int]] = []
    real = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: (seen.append(self.size), real(self))[1])
    return seen


@pytest.mark.parametrize("h, w", [(30000, 30000), (12000, 9000)],
                         ids=["over-twice-pillows-limit", "over-pillows-limit"])
def test_bomb_is_refused_before_decoding(tmp_path: Path, loads: list, h: int, w: int) -> None:
    """Over 2x Pillow's limit Pillow itself refuses at open; between 1x and 2x it only warns: refused here."""
    path = png_declaring(tmp_path, h, w)
    loads.clear()  # writing the file decoded its 1x1 pixels
    for call in (lambda: read_image(path), lambda: decode_bytes(path.read_bytes())):
        with pytest.raises(InputError) as exc:
            call()
        one_line_error(exc, "decompression-bomb limit (89,478,485)", "decompression bomb")
    assert loads == []


def test_callers_check_sees_the_upright_header_size_before_decoding(tmp_path: Path, loads: list) -> None:
    Image.fromarray(np.zeros((3000, 2000), np.uint8)).save(tmp_path / "big.png")
    loads.clear()  # writing the file decoded it
    seen = []

    def refuse(h: int, w: int) -> None:
        seen.append((h, w))
        raise InputError(f"refused {h}x{w}")

    with pytest.raises(InputError, match="refused 3000x2000"):
        read_image(tmp_path / "big.png", check=refuse)
    with pytest.raises(InputError, match="refused 3000x2000"):
        decode_bytes((tmp_path / "big.png").read_bytes(), check=refuse)
    assert loads == [] and seen == [(3000, 2000)] * 2


# ---------------------------------------------------------------------------
# EXIF orientation, crafted EXIF, truncated files
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("name", sorted(CRAFTED_EXIF))
def test_crafted_exif_is_one_line_corrupt_image(tmp_path: Path, name: str, fmt: str) -> None:
    data = with_exif(gradient(10, 20, "RGB"), fmt, CRAFTED_EXIF[name])
    with Image.open(io.BytesIO(data)) as img:  # what Pillow alone does with it
        with pytest.raises((struct.error, TypeError)):
            ImageOps.exif_transpose(img)
    path = tmp_path / "crafted.png"
    path.write_bytes(data)
    for call in (lambda: read_image(path), lambda: decode_bytes(data),
                 lambda: to_pixels(Image.open(io.BytesIO(data)), 3)):
        with pytest.raises(InputError) as exc:
            call()
        one_line_error(exc, "is corrupt: its EXIF block does not parse")
    assert image_size(path) == (20, 10)  # the header alone is readable: turned as the orientation says


def test_exif_orientation_and_sixteen_bit_scaling(tmp_path: Path) -> None:
    ramp = (np.arange(40 * 30).reshape(40, 30) * 50).astype(np.uint16)  # up to 59,950: beyond 8 bits
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    pixels = to_pixels(read_image(tmp_path / "g16.png"), 1)
    assert pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[..., 0], ramp / 257, rtol=1e-6)  # not clipped to 0/255
    x = to_model_input(read_image(tmp_path / "g16.png"), Preprocess(channels=1, scale=1 / 255))
    np.testing.assert_allclose(x[0], ramp / 257 / 255, rtol=1e-6)
    assert len(np.unique(x)) > 256
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left of the stored pixels
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "r.jpg") as lazy:
        assert header_size(lazy) == (40, 20)  # (height, width) as shown, read before decoding
    for upright in (read_image(tmp_path / "r.jpg"), decode_bytes((tmp_path / "r.jpg").read_bytes())):
        assert upright.size == (20, 40)  # width, height: turned
        x = to_model_input(upright, Preprocess(channels=3, scale=1.0))
        assert x.dtype == np.float32 and x.shape == (3, 40, 20)
        assert x[:, :10].mean() > 200 and x[:, -10:].mean() < 50  # the band is now at the top


def test_float_images_are_refused() -> None:
    with pytest.raises(InputError, match="32-bit float images have no defined pixel range"):
        to_pixels(Image.new("F", (3, 3)), 1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF"])
def test_truncated_file_is_one_line(tmp_path: Path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (60, 50, 3), np.uint8)
    data = encode(Image.fromarray(noise).convert("P" if fmt == "GIF" else "RGB"), fmt)
    cut = data[: len(data) // 2]
    (tmp_path / "cut").write_bytes(cut)
    for call in (lambda: read_image(tmp_path / "cut"), lambda: decode_bytes(cut)):
        with pytest.raises(InputError) as exc:
            call()
        one_line_error(exc, "truncated or corrupt")


def test_empty_missing_and_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty"):
        decode_bytes(b"")
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match=r"is not a PNG, .* image; send encoded image files"):
        decode_bytes(b"hello, not a picture")
    with pytest.raises(InputError, match=r"\(it is a JSON file\)"):
        decode_bytes(b'{"img_size": 28}')
