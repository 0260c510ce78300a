"""Decoding and validating uploads; re-encoding without metadata."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mlcore.imageio import DecodeLimits, ImageDecodeError, decode_image, encode_jpeg, encode_png

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _halves(size=(80, 60)) -> Image.Image:
    """Left half red, right half blue: orientation changes are visible."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions but carries (almost) no pixel data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    return exif


class TestDecodeImage:
    @pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
    def test_it_decodes_common_formats(self, fmt):
        decoded = decode_image(_bytes(_halves(), fmt))
        assert decoded.mode == "RGB"
        assert decoded.size == (80, 60)
        red = decoded.getpixel((10, 30))
        assert red[0] > 200 and red[2] < 60

    def test_it_accepts_paths_and_open_files(self, tmp_path):
        path = tmp_path / "coin.png"
        path.write_bytes(_bytes(_halves(), "PNG"))
        assert decode_image(path).size == (80, 60)
        assert decode_image(str(path)).size == (80, 60)
        with path.open("rb") as fh:
            assert decode_image(fh).size == (80, 60)

    def test_it_applies_exif_orientation(self):
        exif = Image.Exif()
        exif[ORIENTATION] = 6  # stored sideways: rotate 90° clockwise to display
        decoded = decode_image(_bytes(_halves(), "JPEG", exif=exif.tobytes(), quality=95))
        assert decoded.size == (60, 80)
        top, bottom = decoded.getpixel((30, 5)), decoded.getpixel((30, 75))
        assert top[0] > 200 and top[2] < 60  # the stored left (red) half is now on top
        assert bottom[2] > 200 and bottom[0] < 60

    def test_it_converts_cmyk_to_rgb(self):
        cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # red ink
        decoded = decode_image(_bytes(cmyk, "JPEG", quality=95))
        assert decoded.mode == "RGB"
        r, g, b = decoded.getpixel((32, 32))
        assert r > 200 and g < 60 and b < 60

    def test_it_scales_16_bit_greyscale_instead_of_clipping(self):
        sixteen = Image.fromarray(np.full((48, 48), 40000, dtype=np.uint16))
        assert sixteen.mode.startswith("I")
        decoded = decode_image(_bytes(sixteen, "PNG"))
        assert decoded.mode == "RGB"
        assert abs(decoded.getpixel((5, 5))[0] - round(40000 / 257)) <= 1

    def test_it_converts_palette_images(self):
        palette = _halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        decoded = decode_image(_bytes(palette, "PNG"))
        assert decoded.mode == "RGB"
        assert decoded.getpixel((70, 30))[2] > 200

    def test_it_keeps_meaningful_alpha_as_rgba(self):
        la = Image.new("LA", (64, 64), (200, 0))
        la.paste((200, 255), (16, 16, 48, 48))
        decoded = decode_image(_bytes(la, "PNG"))
        assert decoded.mode == "RGBA"
        assert decoded.getpixel((2, 2))[3] == 0
        assert decoded.getpixel((32, 32))[3] == 255

    def test_it_drops_alpha_that_is_fully_opaque(self):
        decoded = decode_image(_bytes(_halves().convert("RGBA"), "PNG"))
        assert decoded.mode == "RGB"

    def test_it_uses_the_first_frame_of_an_animation(self):
        frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 255, 0))]
        data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
        decoded = decode_image(data)
        assert decoded.getpixel((20, 20))[0] > 200

    def test_it_uses_the_primary_image_of_a_multi_picture_jpeg_reduced(self):
        frames = [Image.new("RGB", (1200, 800), colour) for colour in ((220, 30, 30), (30, 220, 30))]
        data = _bytes(frames[0], "MPO", save_all=True, append_images=frames[1:])
        decoded = decode_image(data, limits=DecodeLimits(max_side=400))
        assert max(decoded.size) <= 400
        assert decoded.getpixel((10, 10))[0] > 180

    def test_it_decodes_big_jpegs_reduced(self):
        data = _bytes(_halves((1024, 768)), "JPEG")
        decoded = decode_image(data, limits=DecodeLimits(max_side=300))
        assert max(decoded.size) <= 300
        assert decoded.size[0] / decoded.size[1] == pytest.approx(1024 / 768, rel=0.02)

    def test_it_returns_no_metadata(self):
        decoded = decode_image(_bytes(_halves(), "JPEG", exif=_exif_with_gps().tobytes()))
        assert "exif" not in decoded.info

    def test_it_rejects_an_empty_file(self):
        with pytest.raises(ImageDecodeError, match="empty"):
            decode_image(b"")

    def test_it_rejects_truncated_jpeg(self):
        rng = np.random.default_rng(0)
        noisy = Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
        data = _bytes(noisy, "JPEG", quality=90)
        with pytest.raises(ImageDecodeError, match="not an image"):
            decode_image(data[: len(data) // 2])

    def test_it_rejects_garbage_bytes(self):
        garbage = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        with pytest.raises(ImageDecodeError, match="not an image"):
            decode_image(garbage)

    @pytest.mark.parametrize(
        ("data", "words"),
        [
            (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10"/>', "SVG"),
            (b"%PDF-1.7\n1 0 obj << >> endobj\n", "PDF"),
            (b"Just some text, not a picture of a coin.\n" * 5, "not an image"),
        ],
    )
    def test_it_rejects_documents_with_a_clear_message(self, data, words):
        with pytest.raises(ImageDecodeError, match=words):
            decode_image(data)

    def test_it_rejects_a_header_claiming_too_many_pixels(self):
        with pytest.raises(ImageDecodeError, match=r"too large: 60 megapixels \(limit 50 for PNG\)"):
            decode_image(_png_header_only(10_000, 6_000))

    def test_a_60_megapixel_jpeg_is_decoded_reduced_not_refused(self):
        # A 61 MP camera or a phone's 50+ MP mode: decoded at half scale in the DCT domain, then reduced.
        photo = Image.new("L", (9_000, 6_800), 90)
        ImageDraw.Draw(photo).ellipse((2_000, 1_000, 7_000, 6_000), fill=200)
        decoded = decode_image(_bytes(photo, "JPEG"))
        assert decoded.size == (4_096, 3_095) and decoded.mode == "RGB"
        assert decoded.getpixel((2_048, 1_548))[0] > 180  # the disc, where it was

    def test_a_jpeg_beyond_its_own_limit_is_refused(self):
        from tests.samples import crafted_header

        with pytest.raises(ImageDecodeError, match=r"too large: 160 megapixels \(limit 150\)"):
            decode_image(crafted_header("JPEG", 16_000, 10_000))

    def test_it_rejects_a_decompression_bomb_beyond_pillows_own_limit(self):
        with pytest.raises(ImageDecodeError, match="too large: 400 megapixels"):
            decode_image(_png_header_only(20_000, 20_000))

    def test_it_rejects_files_over_max_bytes(self, tmp_path):
        data = _bytes(_halves(), "PNG")
        limits = DecodeLimits(max_bytes=len(data) - 1)
        with pytest.raises(ImageDecodeError, match="too large"):
            decode_image(data, limits=limits)
        path = tmp_path / "big.png"
        path.write_bytes(data)
        with pytest.raises(ImageDecodeError, match="too large"):
            decode_image(path, limits=limits)

    def test_it_rejects_tiny_images(self):
        with pytest.raises(ImageDecodeError, match="too small"):
            decode_image(_bytes(Image.new("RGB", (20, 100)), "PNG"))


class TestEncode:
    def test_encode_jpeg_strips_exif_and_gps(self):
        original = Image.open(io.BytesIO(_bytes(_halves(), "JPEG", exif=_exif_with_gps().tobytes())))
        assert original.getexif().get_ifd(GPS_IFD)  # the fixture does carry GPS
        reopened = Image.open(io.BytesIO(encode_jpeg(original)))
        assert "exif" not in reopened.info
        assert not reopened.getexif().get_ifd(GPS_IFD)
        assert len(reopened.getexif()) == 0

    def test_encode_png_strips_metadata_and_keeps_alpha(self):
        image = _halves().convert("RGBA")
        image.putpixel((0, 0), (0, 0, 0, 0))
        image.info["exif"] = _exif_with_gps().tobytes()
        image.info["comment"] = "secret location"
        reopened = Image.open(io.BytesIO(encode_png(image)))
        assert reopened.mode == "RGBA"
        assert "exif" not in reopened.info and "comment" not in reopened.info
        assert len(reopened.getexif()) == 0
        assert reopened.getpixel((0, 0))[3] == 0

    def test_encode_jpeg_flattens_transparency(self):
        image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
        reopened = Image.open(io.BytesIO(encode_jpeg(image)))
        assert reopened.mode == "RGB"
        assert reopened.getpixel((20, 20))[0] > 240  # transparent areas become white
