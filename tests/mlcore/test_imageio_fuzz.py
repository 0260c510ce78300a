"""Hostile files against the decode path: fuzzed (hypothesis) and hand-crafted.

Whatever arrives, ``probe_image``/``decode_image`` either return a clean image within the limits or
raise ``ImageDecodeError`` with a message for the uploader; nothing else escapes, and a bomb is
refused before its pixels are decoded (peak memory measured in a subprocess).

The fuzz runs are reproducible and bounded: ``derandomize=True`` (examples follow from the test's
source), no example database, and ``OBVERSE_FUZZ_EXAMPLES`` examples per test (default 150; raise it
for a longer local run). ``pytest --hypothesis-show-statistics`` prints the counts.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlcore.imageio import DecodeLimits, ImageDecodeError, decode_image, encode_jpeg, probe_image
from tests.samples import MUTATION, crafted_header, encoded, mutate, noise_image, png_chunk, seeds

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("OBVERSE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # a shared 2-core machine is noisy; the whole file's time is what is bounded
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = DecodeLimits()


hostile_files = st.builds(
    mutate, st.sampled_from(sorted(seeds())).map(lambda name: seeds()[name]), st.lists(MUTATION, min_size=1, max_size=6)
)


def _assert_clean(image: Image.Image) -> None:
    assert image.mode in ("RGB", "RGBA")
    assert LIMITS.min_side <= min(image.size) and max(image.size) <= LIMITS.max_side
    assert image.info == {}


def _decode_outcome(data: bytes) -> str | Image.Image:
    """The decoded image, or the error message; any other exception fails the calling test."""
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        message = str(exc)
        assert message and message[0].isupper() and message.endswith("."), message
        return message


class TestFuzzedFiles:
    @FUZZ
    @given(data=hostile_files)
    def test_a_mutated_file_decodes_cleanly_or_fails_with_a_message(self, data):
        outcome = _decode_outcome(data)
        if isinstance(outcome, Image.Image):
            _assert_clean(outcome)

    @FUZZ
    @given(data=hostile_files)
    def test_the_header_probe_never_refuses_what_decoding_accepts(self, data):
        # The upload form refuses on the probe alone: it must never turn away a photo the worker could use.
        try:
            probe = probe_image(data)
        except ImageDecodeError as exc:
            assert str(exc)
            with pytest.raises(ImageDecodeError):
                decode_image(data)
        else:
            assert probe.width * probe.height <= LIMITS.max_pixels
            assert min(probe.width, probe.height) >= LIMITS.min_side

    @FUZZ
    @given(data=st.binary(max_size=4096))
    def test_arbitrary_bytes_are_refused_with_a_message(self, data):
        outcome = _decode_outcome(data)
        if isinstance(outcome, Image.Image):  # vanishingly rare, but then it must be a clean image
            _assert_clean(outcome)

    @FUZZ
    @given(
        fmt=st.sampled_from(["PNG", "GIF", "BMP", "TIFF", "JPEG"]),
        width=st.integers(min_value=1, max_value=2**16 - 1),
        height=st.integers(min_value=1, max_value=2**16 - 1),
    )
    def test_a_header_claiming_any_size_is_judged_before_decoding(self, fmt, width, height):
        data = crafted_header(fmt, width, height)
        pixels = width * height
        if pixels > (LIMITS.max_pixels_jpeg if fmt == "JPEG" else LIMITS.max_pixels):
            with pytest.raises(ImageDecodeError, match="too large"):
                probe_image(data)
        elif min(width, height) < LIMITS.min_side:
            with pytest.raises(ImageDecodeError, match="too small"):
                probe_image(data)
        elif max(width, height) > LIMITS.max_aspect * min(width, height):
            with pytest.raises(ImageDecodeError, match="too narrow"):
                probe_image(data)
        else:
            probe = probe_image(data)
            assert (probe.width, probe.height) == (width, height)


class TestCraftedFiles:
    @pytest.mark.parametrize(
        ("data", "words"),
        [
            (b"", "empty"),
            (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF", "PDF"),
            (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "SVG"),
            (b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>", "HTML"),
            (b"  <html><img src=x onerror=alert(1)></html>", "HTML"),
            (b"PK\x03\x04" + b"\0" * 200, "ZIP"),
            (b"\x1f\x8b\x08\x00" + b"\0" * 100, "gzip"),
        ],
    )
    def test_documents_and_archives_are_refused_by_what_they_are(self, data, words):
        for check in (probe_image, decode_image):
            with pytest.raises(ImageDecodeError, match=words):
                check(data)

    @pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", "JPEG"])
    def test_a_bomb_header_of_every_format_is_refused_as_too_large(self, fmt):
        with pytest.raises(ImageDecodeError, match="too large"):
            decode_image(crafted_header(fmt, 60000, 60000))

    def test_a_strip_of_pixels_is_refused_as_too_narrow(self):
        with pytest.raises(ImageDecodeError, match="too narrow"):
            decode_image(encoded(Image.new("RGB", (4000, 40)), "PNG"))

    def test_a_jpeg_zip_polyglot_decodes_to_the_photo_and_the_archive_is_dropped(self):
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("payload.html", "<script>alert(1)</script>")
        data = encoded(noise_image(), "JPEG") + archive.getvalue()
        assert zipfile.is_zipfile(io.BytesIO(data))  # really both
        image = decode_image(data)
        assert image.size == (64, 48)
        stored = encode_jpeg(image)
        assert b"PK\x03\x04" not in stored and b"<script" not in stored

    def test_a_gif_html_polyglot_keeps_no_markup_after_re_encoding(self):
        gif = encoded(
            Image.new("RGB", (64, 48), (10, 200, 10)).convert("P"), "GIF", comment=b"<script>alert(1)</script>"
        )
        assert b"<script" in gif
        image = decode_image(gif)
        assert image.getpixel((5, 5))[1] > 150
        assert b"<script" not in encode_jpeg(image)

    def test_a_png_named_like_anything_is_judged_by_its_content(self):
        # Names and declared types are not read at all: only the bytes are.
        assert probe_image(encoded(noise_image(), "PNG")).format == "PNG"

    def test_an_animated_gif_gives_its_first_frame(self):
        image = decode_image(seeds()["gif-animated"])
        red, _, blue = image.getpixel((10, 10))
        assert red > 200 and blue < 50

    @pytest.mark.parametrize(
        ("name", "mode"),
        [
            ("tiff-16bit-grey", "RGB"),
            ("tiff-cmyk", "RGB"),
            ("tiff-palette", "RGB"),
            ("tiff-alpha-deflate", "RGBA"),
            ("png-16bit-grey", "RGB"),
        ],
    )
    def test_awkward_tiff_and_png_modes_decode_to_rgb_or_rgba(self, name, mode):
        image = decode_image(seeds()[name])
        assert image.mode == mode and image.size == (64, 48)
        if "16bit" in name:  # scaled, not clipped: the ramp's values spread over the 8-bit range
            values = np.asarray(image.convert("L"))
            assert values.max() > 200 and len(np.unique(values)) > 100

    @pytest.mark.parametrize("fmt", ["PNG", "PDF"])
    def test_the_probe_leaves_an_open_upload_at_its_start_for_saving(self, fmt):
        data = encoded(noise_image(), "PNG") if fmt == "PNG" else b"%PDF-1.4 not a photo"
        handle = io.BytesIO(data)
        try:
            probe_image(handle)
        except ImageDecodeError:
            assert fmt == "PDF"
        assert handle.tell() == 0 and handle.read() == data


# --- memory: bombs are refused before their pixels are decoded ----------------------------------

RSS_SCRIPT = """
import json, sys
from mlcore.imageio import ImageDecodeError, decode_image


def high_water_mb():
    # VmHWM belongs to this process's own memory map. getrusage's ru_maxrss would not do: Linux carries
    # the high-water mark of the parent's map (pytest, gigabytes with torch loaded) across fork + exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


data = open(sys.argv[1], "rb").read()
before = high_water_mb()
try:
    image = decode_image(data)
    outcome = "decoded %dx%d" % image.size
except ImageDecodeError as exc:
    outcome = str(exc)
after = high_water_mb()
print(json.dumps({"outcome": outcome, "growth_mb": after - before, "peak_mb": after}))
"""


def _png_of_zeros(width: int, height: int, *, depth: int = 8, colour: int = 2) -> bytes:
    """A real PNG bomb: every row present and valid, all zeros, so it compresses ~1000:1."""
    channels = {0: 1, 2: 3, 6: 4}[colour]
    row = b"\0" * (1 + width * channels * depth // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def _decode_in_subprocess(tmp_path: Path, data: bytes) -> dict:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


class TestMemory:
    @pytest.mark.parametrize(
        "make",
        [
            pytest.param(lambda: crafted_header("PNG", 100_000, 100_000), id="png-header-100000x100000"),
            pytest.param(lambda: crafted_header("JPEG", 65_000, 65_000), id="jpeg-header-65000x65000"),
            pytest.param(lambda: crafted_header("TIFF", 60_000, 60_000), id="tiff-header-60000x60000"),
            pytest.param(lambda: _png_of_zeros(12_000, 12_000, colour=0), id="png-real-bomb-144-megapixels"),
        ],
    )
    def test_a_bomb_is_refused_before_decoding_with_little_memory(self, tmp_path, make):
        data = make()
        assert len(data) < 2**20  # small file…
        result = _decode_in_subprocess(tmp_path, data)
        assert "too large" in result["outcome"]
        # …and decoding it would need gigabytes; refusing it costs (almost) nothing.
        assert result["growth_mb"] < 30, result

    @pytest.mark.slow
    def test_the_worst_photo_within_the_limits_stays_under_a_known_bound(self, tmp_path):
        # 49 megapixels of 16-bit grey: the costliest file that passes every header check (no reduced
        # decoding for PNG; 16-bit samples need scaling). The bound is what a worker must budget.
        data = _png_of_zeros(7000, 7000, depth=16, colour=0)
        result = _decode_in_subprocess(tmp_path, data)
        assert result["outcome"] == "decoded 4096x4096"
        assert result["peak_mb"] < 600, result
