"""Canned files that several test modules feed the product: sample records and hostile inputs.

NUDS XML (a minimal record, an entity bomb), rows of the generic CSV layout, a phone JPEG with GPS,
small valid images of every accepted format and the byte mutations the fuzz tests apply to them,
and image headers that claim sizes their pixels do not have.
"""

from __future__ import annotations

import csv
import io
import shutil
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

MINIMAL = """<?xml version="1.0" encoding="UTF-8"?>
<nuds xmlns="http://nomisma.org/nuds" xmlns:xlink="http://www.w3.org/1999/xlink"
      xmlns:tei="http://www.tei-c.org/ns/1.0" recordType="physical">
  <control><recordId>{record_id}</recordId>
    <maintenanceAgency><agencyName>Test Cabinet</agencyName></maintenanceAgency></control>
  <descMeta>
    <title xml:lang="en">Silver Denarius of Test, Rome, 44 BCE. {record_id}</title>
    <typeDesc>
      <date standardDate="-0044">44 BCE</date>
      <material xlink:href="http://nomisma.org/id/ar">Silver</material>
      <authority><persname xlink:role="authority" xlink:href="http://nomisma.org/id/julius_caesar">Caesar</persname></authority>
      <obverse><legend><tei:div type="edition"><tei:ab>CAESAR   DICT</tei:ab></tei:div></legend></obverse>
    </typeDesc>
    <physDesc><axis>{axis}</axis><measurementsSet><weight units="g">{weight}</weight></measurementsSet></physDesc>
    <refDesc><reference xlink:href="http://numismatics.org/crro/id/rrc.480.1">RRC 480/1</reference></refDesc>
  </descMeta>
</nuds>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE nuds [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
  <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
  <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
  <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
  <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
]>
<nuds xmlns="http://nomisma.org/nuds"><control><recordId>LAUGHS.1</recordId></control>
<descMeta><title>&g;</title></descMeta></nuds>
"""


GENERIC_HEADER = [
    "record_id",
    "title",
    "item_uri",
    "item_reference",
    "authority",
    "authority_uri",
    "mint",
    "material",
    "date_from",
    "date_to",
    "obverse_legend",
    "weight_g",
    "diameter_mm",
    "axis",
    "obverse_image",
    "reverse_image",
    "concept:portrait",
    "concept:portrait:uri",
    "attr:rarity",
]


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def generic_row(n: int, **overrides: str) -> list[str]:
    values = {
        "record_id": f"MUS.{n}",
        "title": f"Denarius {n}. MUS.{n}",
        "item_uri": "http://numismatics.org/crro/id/rrc.480.1",
        "item_reference": "RRC 480/1",
        "authority": "Julius Caesar",
        "authority_uri": "http://nomisma.org/id/julius_caesar",
        "mint": "Rome",
        "material": "Silver",
        "date_from": "-44",
        "date_to": "-44",
        "obverse_legend": "CAESAR DICT PERPETVO",
        "weight_g": "3.91",
        "diameter_mm": "19",
        "axis": "6",
        "obverse_image": f"img/{n}.obv.png",
        "reverse_image": f"img/{n}.rev.png",
        "concept:portrait": "Julius Caesar | Venus",
        "concept:portrait:uri": "http://nomisma.org/id/julius_caesar | http://nomisma.org/id/venus",
        "attr:rarity": "R1",
    }
    values.update(overrides)
    return [values[column] for column in GENERIC_HEADER]


def jpeg_with_gps(size: tuple[int, int] = (400, 300), orientation: int = 1) -> bytes:
    """A JPEG carrying an EXIF orientation and GPS position (what a phone writes)."""
    image = Image.new("RGB", size, "#b08d57")
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[2] = (51.0, 30.0, 0.0)  # GPSLatitude
    gps[1] = "N"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    """``image`` saved as ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def noise_image(mode: str = "RGB", size=(64, 48), seed: int = 0) -> Image.Image:
    """Seeded random pixels."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)


def _grey16(size=(64, 48)) -> Image.Image:
    ramp = (np.arange(size[0] * size[1], dtype=np.uint32).reshape(size[1], size[0]) * 21) % 65536
    return Image.fromarray(ramp.astype(np.uint16))


def _animated_gif() -> bytes:
    first = Image.new("RGB", (64, 48), (255, 0, 0)).convert("P")
    second = Image.new("RGB", (64, 48), (0, 0, 255)).convert("P")
    return encoded(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


@cache
def seeds() -> dict[str, bytes]:
    """Small valid files of every accepted format and awkward mode: the material the fuzzer mutates."""
    rgb, rgba = noise_image(), noise_image("RGBA")
    return {
        "jpeg": encoded(rgb, "JPEG", quality=80),
        "jpeg-progressive": encoded(rgb, "JPEG", progressive=True),
        "png": encoded(rgb, "PNG"),
        "png-alpha": encoded(rgba, "PNG"),
        "png-palette": encoded(rgb.convert("P"), "PNG"),
        "png-16bit-grey": encoded(_grey16(), "PNG"),
        "webp": encoded(rgb, "WEBP"),
        "gif-animated": _animated_gif(),
        "tiff": encoded(rgb, "TIFF"),
        "tiff-lzw": encoded(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-cmyk": encoded(rgb.convert("CMYK"), "TIFF"),
        "tiff-16bit-grey": encoded(_grey16(), "TIFF"),
        "tiff-palette": encoded(rgb.convert("P"), "TIFF"),
        "tiff-alpha-deflate": encoded(rgba, "TIFF", compression="tiff_adobe_deflate"),
        "bmp": encoded(rgb, "BMP"),
    }


# One mutation: (operation, position seed, byte value). Positions are taken modulo the file length,
# so every mutation applies to every seed and hypothesis can shrink a failure to a few bytes.
MUTATION = st.tuples(
    st.sampled_from(["truncate", "flip", "set", "insert", "delete", "header"]),
    st.integers(min_value=0, max_value=2**31),
    st.integers(min_value=0, max_value=255),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for operation, where, value in mutations:
        if not out:
            break
        position = where % len(out)
        if operation == "truncate":
            del out[position:]
        elif operation == "flip":
            out[position] ^= 1 << (value % 8)
        elif operation == "set":
            out[position] = value
        elif operation == "insert":
            out[position:position] = bytes([value]) * (1 + where % 16)
        elif operation == "delete":
            del out[position : position + 1 + where % 16]
        else:  # headers hold the sizes, offsets and counts that parsers trust
            out[where % min(len(out), 128)] = value
    return bytes(out)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def crafted_header(fmt: str, width: int, height: int) -> bytes:
    """A file of ``fmt`` whose header claims ``width``×``height`` but that carries almost no pixels."""
    if fmt == "PNG":
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\0" * 64)
        return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    if fmt == "GIF":
        screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
        descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
        return b"GIF89a" + screen + descriptor + b"\x02\x02\x44\x01\x00\x3b"
    if fmt == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\0" * 16
    if fmt == "TIFF":
        entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
        entries += [(273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in entries)
        return b"II*\x00" + struct.pack("<I", 24) + b"\0" * 16 + ifd + b"\0\0\0\0"
    # JPEG: a real tiny JPEG whose SOF0 dimensions are rewritten.
    data = bytearray(encoded(Image.new("L", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# --- Real ANS records (read from ../shared/data, never copied into the project) ---------------

# Chosen to cover: three and two coins of one type, records without a type URI, a single <date>,
# an RPC type with a second linked reference, and a few ordinary ones.
ANS_SUBSET = [
    "1944.100.23777",
    "1934.21.55",
    "1944.100.22734",  # ric.8.cnp.37 ×3
    "1944.100.53312",
    "1944.100.53313",  # ric.4.sa.648b ×2
    "1944.100.53316",
    "1946.35.79",  # no type URI
    "0000.999.3156",  # <date> instead of <dateRange>
    "1944.100.39369",  # OCRE and RPC links
    "1944.100.53310",
    "1944.100.53311",
    "0000.999.10200",
]


def external_entity(secret: Path) -> str:
    return f"""<?xml version="1.0"?>
<!DOCTYPE nuds [<!ENTITY xxe SYSTEM "file://{secret}">]>
<nuds xmlns="http://nomisma.org/nuds"><control><recordId>XXE.1</recordId></control>
<descMeta><title>&xxe;</title></descMeta></nuds>
"""


# Four coins of Severus Alexander (two of one type): enough for matching, re-import and failures.
ANS_SMALL = ["1944.100.53312", "1944.100.53313", "1944.100.53310", "1944.100.53311"]


def copy_records(ans_dir: Path, folder: Path, record_ids: list[str]) -> Path:
    """A NUDS folder with these records and an images folder beside it (copies, in tmp)."""
    (folder / "nuds").mkdir()
    (folder / "images").mkdir()
    for record_id in record_ids:
        shutil.copy(ans_dir / "nuds" / f"{record_id}.xml", folder / "nuds")
        for side in ("obv", "rev"):
            shutil.copy(ans_dir / "images" / f"{record_id}.{side}.jpg", folder / "images")
    return folder
