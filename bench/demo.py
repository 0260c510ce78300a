"""The synthetic demo collection: invented coin types, rendered as catalogue photos, seeded and fast.

The project cannot ship museum photographs, so ``make run`` loads this collection when the catalogue
is empty. Every ruler, mint and type here is fictional (rulers are labelled "(fictional)", URIs are
on example.org). Images are rendered from height maps (a "die" per type and side: portrait or motif,
legend, beaded border) lit like relief, and each specimen varies in wear, patina, flan shape,
off-centre strike, small rotation and lighting, so specimens of a type look like the same type and
types look different, as real ones do.

Output is a folder in the generic CSV layout (``demo.csv`` + ``images/``) that the tabular importer
reads; nothing here touches the database. Pure Pillow/numpy/scipy, no Django imports.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage

DEFAULT_SEED = 1
DEFAULT_TYPES = 42
IMAGE_SIZE = 400
CSV_NAME = "demo.csv"
TYPE_URI_BASE = "https://example.org/obverse-demo/type/"
REFERENCE_PREFIX = "ODC"  # "Obverse Demo Catalogue", an invented reference work

CSV_COLUMNS = [
    "record_id",
    "title",
    "item_uri",
    "item_reference",
    "item_title",
    "authority",
    "authority_uri",
    "mint",
    "mint_uri",
    "region",
    "material",
    "material_uri",
    "denomination",
    "denomination_uri",
    "object_type",
    "date_from",
    "date_to",
    "obverse_legend",
    "obverse_description",
    "reverse_legend",
    "reverse_description",
    "weight_g",
    "diameter_mm",
    "axis",
    "source_url",
    "obverse_image",
    "reverse_image",
]

# --- Invented vocabulary -------------------------------------------------------------------------

# (realm, mints as (name, mark)), all fictional.
REALMS = (
    ("Valdoria", (("Corvanum", "CORV"), ("Ostrel", "OST"))),
    ("Kethran League", (("Kethra", "KET"), ("Amberis", "AMB"))),
    ("Sarnese Coast", (("Sarnos", "SAR"), ("Pellagia", "PEL"))),
    ("Ostmarch", (("Dunmarch", "DVN"), ("Velmora", "VEL"))),
    ("Ilvane Kingdom", (("Ilvanum", "ILV"), ("Teskar", "TES"))),
)

# (name on pages, name in legends, realm index, reign start, reign end)
RULERS = (
    ("Arctavian I", "ARCTAVIANVS", 0, 212, 231),
    ("Selvara", "SELVARA", 0, 231, 240),
    ("Mardonix II", "MARDONIX", 1, -148, -121),
    ("Theodric the Elder", "THEODRICVS", 3, 402, 431),
    ("Casimor III", "CASIMORVS", 4, 288, 305),
    ("Velunia", "VELVNIA", 2, -64, -41),
    ("Ortwin IV", "ORTWINVS", 3, 431, 452),
    ("Pheradon", "PHERADON", 1, -121, -97),
    ("Lysandrel", "LYSANDRELVS", 2, -41, -12),
    ("Aurelian Vorn", "AVRELIANVS VORN", 4, 305, 318),
    ("Quintara", "QVINTARA", 0, 240, 259),
    ("Brannoc I", "BRANNOCVS", 3, 375, 402),
    ("Ismerion", "ISMERION", 2, -12, 19),
    ("Galdric the Bold", "GALDRICVS", 4, 318, 337),
)

TITLES = ("AVG", "P F AVG", "REX", "D N {name} P F AVG", "IMP {name} AVG", "{name} REX PIVS", "BASILEVS {name}")

# Denominations: (name, material, nominal weight g, nominal diameter mm).
DENOMINATIONS = (
    ("aurel", "gold", 7.20, 20.0),
    ("half aurel", "gold", 3.60, 16.5),
    ("argentine", "silver", 3.40, 19.0),
    ("double argentine", "silver", 5.30, 23.0),
    ("major follar", "bronze", 11.0, 28.0),
    ("follar", "bronze", 4.60, 21.0),
    ("minim", "bronze", 1.60, 14.0),
)

MATERIAL_LABELS = {"gold": "Gold", "silver": "Silver", "bronze": "Bronze"}

# Reverse motifs: (motif, legend, description subject). Personifications are drawn as a standing figure.
REVERSES = (
    ("figure", "PAX AVGVSTI", "Pax standing {dir}, holding {attr} and sceptre"),
    ("figure", "FIDES MILITVM", "Fides standing {dir}, holding {attr} and standard"),
    ("figure", "SALVS PVBLICA", "Salus standing {dir}, holding {attr} and sceptre, shield at her feet"),
    ("figure", "CONCORDIA REGNI", "Concordia standing {dir}, holding {attr} and cornucopia"),
    ("victory", "VICTORIA AVG", "Victory standing {dir}, holding {attr} and palm"),
    ("temple", "AETERNITAS", "Temple of {columns} columns on a podium"),
    ("wreath", "", "{text} within laurel wreath"),
    ("eagle", "CONSECRATIO", "Eagle standing facing, wings spread, head {dir}, on {perch}"),
    ("altar", "PROVIDENTIA", "Lighted altar with garland"),
    ("star", "SAECVLI FELICITAS", "Star of {points} rays above crescent"),
    ("galley", "FELICITAS TEMPORVM", "Galley {dir} with {oars} oars and sail"),
    ("gate", "VIRTVS EXERCITVS", "Camp gate with {towers} turrets, star above"),
    ("cornucopiae", "ABVNDANTIA", "Crossed cornucopiae{extra}"),
    ("trophy", "GLORIA EXERCITVS", "Trophy of arms between two shields"),
    ("palm", "SPES PERPETVA", "Palm tree with {fronds} fronds{extra}"),
)

FIELD_MARKS = ("", "star", "crescent", "palm", "letter", "dot")
FIGURE_ATTRIBUTES = ("patera", "wreath", "globe", "branch")
WREATH_TEXTS = (("VOT", "X"), ("VOT", "XX", "MVLT"), ("S", "C"), ("VOTIS", "V"), ("PAX",))

HEADGEAR = ("laurel", "diadem", "radiate", "helmet", "bare")
BUSTS = ("draped", "cuirassed", "neck")


# --- Data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Portrait:
    """Shape parameters of one ruler's profile head; types of a ruler share it (one engraver's style)."""

    facing: int  # 1 right, -1 left
    scale: float
    nose: float
    nose_drop: float
    brow: float
    chin: float
    jaw: float
    neck: float
    cranium: float
    headgear: str
    beard: bool
    hair: str  # "curls" or "strands"
    female: bool


@dataclass(frozen=True)
class CoinType:
    """One invented coin type: metadata as it goes into the CSV, and the parameters of its two dies."""

    index: int
    ruler: str
    ruler_legend: str
    realm: str
    mint: str
    mint_mark: str
    material: str
    denomination: str
    weight_g: float
    diameter_mm: float
    date_from: int
    date_to: int
    obverse_legend: str
    obverse_description: str
    reverse_legend: str
    reverse_description: str
    portrait: Portrait
    bust: str
    reverse: dict = field(hash=False)

    @property
    def reference(self) -> str:
        return f"{REFERENCE_PREFIX} {self.index + 1}"

    @property
    def uri(self) -> str:
        return f"{TYPE_URI_BASE}{self.index + 1}"

    @property
    def title(self) -> str:
        return f"{self.ruler_label}, {self.denomination}, {self.mint} ({self.reference})"

    @property
    def ruler_label(self) -> str:
        return f"{self.ruler} (fictional)"


@dataclass(frozen=True)
class Look:
    """How one side of one specimen differs from the die: the strike, the flan, its wear, colour and light."""

    rotation: float  # degrees, clockwise
    shift: tuple[float, float]  # off-centre strike, in die radii
    flan_scale: float
    flan_wobble: tuple[float, ...]  # amplitudes and phases of low harmonics of the flan outline
    wear: float  # 0 sharp … 1 very worn
    weak_strike: float
    patina: float  # 0 clean … 1 heavy (green for bronze, toning for silver)
    tint: tuple[float, float, float]
    light_azimuth: float  # degrees; 135 = from the upper left
    light_elevation: float
    noise_seed: int


@dataclass(frozen=True)
class DemoSpecimen:
    """One invented physical coin: its record, measurements and how its two sides look."""

    record_id: str
    coin_type: CoinType
    number: int
    weight_g: float
    diameter_mm: float
    axis: int
    obverse: Look
    reverse: Look

    def look(self, side: str) -> Look:
        return self.obverse if side == "obverse" else self.reverse


@dataclass
class DemoCollection:
    """What ``demo_generate`` wrote: the CSV file, the types and the specimens."""

    csv_path: Path
    types: list[CoinType]
    specimens: list[DemoSpecimen]


# --- Seeded choices -----------------------------------------------------------------------------


def _rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator for one thing (a type, a specimen) so that asking for fewer types changes nothing else."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _portrait(seed: int, ruler_index: int) -> Portrait:
    rng = _rng(seed, "portrait", ruler_index)
    female = RULERS[ruler_index][0] in {"Selvara", "Velunia", "Quintara"}
    headgear = ("diadem", "bare", "laurel")[ruler_index % 3] if female else HEADGEAR[ruler_index % len(HEADGEAR)]
    return Portrait(
        facing=1 if ruler_index % 4 != 3 else -1,
        scale=float(rng.uniform(0.92, 1.06)),
        nose=float(rng.uniform(0.05, 0.13)) * (0.75 if female else 1.0),
        nose_drop=float(rng.uniform(0.0, 0.05)),
        brow=float(rng.uniform(0.0, 0.04)),
        chin=float(rng.uniform(-0.03, 0.05)),
        jaw=float(rng.uniform(0.0, 0.08)),
        neck=float(rng.uniform(0.15, 0.24)) * (0.8 if female else 1.0),
        cranium=float(rng.uniform(0.29, 0.35)),
        headgear=headgear,
        beard=(not female) and bool(ruler_index % 3 == 1 or rng.random() < 0.25),
        hair="strands" if female or rng.random() < 0.4 else "curls",
        female=female,
    )


def demo_types(*, n_types: int = DEFAULT_TYPES, seed: int = DEFAULT_SEED) -> list[CoinType]:
    """The first ``n_types`` invented coin types (three per ruler, rulers in turn), deterministic in ``seed``."""
    types = []
    for index in range(n_types):
        ruler_index = index // 3 % len(RULERS)
        rng = _rng(seed, "type", index)
        name, legend_name, realm_index, reign_from, reign_to = RULERS[ruler_index]
        realm, mints = REALMS[realm_index]
        mint, mint_mark = mints[int(rng.integers(len(mints)))]
        denomination, material, weight, diameter = DENOMINATIONS[int(rng.integers(len(DENOMINATIONS)))]
        span = reign_to - reign_from
        date_from = reign_from + int(rng.integers(0, max(1, span - 3)))
        date_to = min(reign_to, date_from + int(rng.integers(0, 6)))
        portrait = _portrait(seed, ruler_index)
        bust = "neck" if portrait.female and index % 2 else BUSTS[int(rng.integers(len(BUSTS)))]
        if portrait.female and bust == "cuirassed":
            bust = "draped"
        title = TITLES[int(rng.integers(len(TITLES)))]
        obverse_legend = title.format(name=legend_name) if "{name}" in title else f"{legend_name} {title}"
        if portrait.female:
            obverse_legend = f"{legend_name} REGINA" if index % 2 else f"{legend_name} AVGVSTA"
        # Reverses are dealt from shuffled decks of all motifs: every motif is used, and a ruler's three
        # types (consecutive, within one deck since the deck size is a multiple of three) all differ.
        deck = _rng(seed, "deck", index // len(REVERSES)).permutation(len(REVERSES))
        motif, reverse_legend, reverse_subject = REVERSES[int(deck[index % len(REVERSES)])]
        reverse = _reverse_params(rng, motif)
        reverse["held"] = {"FIDES": "standard", "CONCORDIA": "cornucopia", "SALVS": "shield"}.get(
            reverse_legend.split()[0] if reverse_legend else "", "sceptre"
        )
        reverse["mint_mark"] = f"{'PST'[int(rng.integers(3))]}{mint_mark}" if rng.random() < 0.5 else mint_mark
        reverse_legend = reverse_legend.replace("AVG", "AVGG") if rng.random() < 0.2 else reverse_legend
        reverse_description = _reverse_description(reverse_subject, reverse)
        headwear = {
            "laurel": "Laureate",
            "diadem": "Diademed",
            "radiate": "Radiate",
            "helmet": "Helmeted",
            "bare": "Bare-headed",
        }
        bust_word = {"draped": "draped bust", "cuirassed": "cuirassed bust", "neck": "head"}[bust]
        bearded = ", bearded" if portrait.beard else ""
        facing = "right" if portrait.facing > 0 else "left"
        obverse_description = f"{headwear[portrait.headgear]} {bust_word} of {name}{bearded}, {facing}"
        types.append(
            CoinType(
                index=index,
                ruler=name,
                ruler_legend=legend_name,
                realm=realm,
                mint=mint,
                mint_mark=reverse["mint_mark"],
                material=material,
                denomination=denomination,
                weight_g=weight,
                diameter_mm=diameter,
                date_from=date_from,
                date_to=date_to,
                obverse_legend=obverse_legend,
                obverse_description=obverse_description,
                reverse_legend=reverse.get("legend_override", reverse_legend),
                reverse_description=reverse_description,
                portrait=portrait,
                bust=bust,
                reverse=reverse,
            )
        )
    return types


def _reverse_params(rng: np.random.Generator, motif: str) -> dict:
    params: dict = {"motif": motif, "facing": 1 if rng.random() < 0.5 else -1}
    # Field marks (control marks beside the design) only where a narrow design leaves room.
    narrow = motif in ("figure", "victory", "altar", "star", "trophy", "cornucopiae")
    params["field_left"] = FIELD_MARKS[int(rng.integers(len(FIELD_MARKS)))] if narrow else ""
    params["field_right"] = FIELD_MARKS[int(rng.integers(len(FIELD_MARKS)))] if narrow else ""
    params["letter"] = "ABΓDEPSTX"[int(rng.integers(9))].replace("Γ", "G")
    if motif in ("figure", "victory"):
        params["attribute"] = FIGURE_ATTRIBUTES[int(rng.integers(len(FIGURE_ATTRIBUTES)))]
    elif motif == "temple":
        params["columns"] = int(rng.choice([2, 4, 6]))
        params["statue"] = bool(rng.random() < 0.6)
    elif motif == "wreath":
        params["text"] = list(WREATH_TEXTS[int(rng.integers(len(WREATH_TEXTS)))])
    elif motif == "eagle":
        params["perch"] = ("globe", "thunderbolt", "wreath")[int(rng.integers(3))]
    elif motif == "star":
        params["points"] = int(rng.choice([6, 8, 12, 16]))
    elif motif == "galley":
        params["oars"] = int(rng.integers(4, 8))
    elif motif == "gate":
        params["towers"] = int(rng.choice([2, 3, 4]))
    elif motif == "cornucopiae":
        params["caduceus"] = bool(rng.random() < 0.5)
    elif motif == "palm":
        params["fronds"] = int(rng.integers(5, 9))
        params["captives"] = bool(rng.random() < 0.5)
    return params


def _reverse_description(subject: str, params: dict) -> str:
    direction = "left" if params["facing"] < 0 else "right"
    text = subject.format(
        dir=direction,
        attr=params.get("attribute", ""),
        columns=params.get("columns", ""),
        text=" / ".join(params.get("text", [])),
        perch={"globe": "a globe", "thunderbolt": "a thunderbolt", "wreath": "a wreath"}.get(params.get("perch", "")),
        points=params.get("points", ""),
        oars=params.get("oars", ""),
        towers=params.get("towers", ""),
        fronds=params.get("fronds", ""),
        extra=(
            ", caduceus between"
            if params.get("caduceus")
            else (", captives seated at either side" if params.get("captives") else "")
        ),
    )
    marks = []
    for side in ("left", "right"):
        mark = params[f"field_{side}"]
        if mark:
            marks.append(f"{params['letter'] if mark == 'letter' else mark} in {side} field")
    if marks:
        text += "; " + "; ".join(marks)
    if params["motif"] != "wreath":
        text += f"; in exergue, {params['mint_mark']}"
    return text


def _look(rng: np.random.Generator, *, wear: float, patina: float, material: str) -> Look:
    wobble = []
    for _ in range(4):
        wobble += [float(rng.uniform(0.0, 0.011)), float(rng.uniform(0, 2 * math.pi))]
    shift_angle = rng.uniform(0, 2 * math.pi)
    shift = float(rng.uniform(0.0, 0.07)) if rng.random() < 0.5 else float(rng.uniform(0, 0.02))
    # Colour varies by alloy and cleaning, but stays recognisably gold, silver or bronze.
    brightness = 1.0 + rng.normal(0, 0.05)
    warmth = rng.normal(0, 0.025 if material == "silver" else 0.04)
    tint = (brightness * (1 + warmth), brightness, brightness * (1 - warmth))
    return Look(
        rotation=float(rng.normal(0, 4.0)),
        shift=(shift * math.cos(shift_angle), shift * math.sin(shift_angle)),
        flan_scale=float(rng.uniform(0.975, 1.025)),  # photographers crop to the coin
        flan_wobble=tuple(wobble),
        wear=float(np.clip(wear + rng.normal(0, 0.08), 0, 1)),
        weak_strike=float(rng.uniform(0, 0.6)) if rng.random() < 0.4 else 0.0,
        patina=float(np.clip(patina + rng.normal(0, 0.1), 0, 1)),
        tint=tuple(float(t) for t in tint),
        light_azimuth=float(rng.uniform(120, 150)),  # catalogue photos are lit from the upper left
        light_elevation=float(rng.uniform(38, 52)),
        noise_seed=int(rng.integers(0, 2**31)),
    )


def demo_specimens(types: list[CoinType], *, seed: int = DEFAULT_SEED) -> list[DemoSpecimen]:
    """Three or four specimens of each type, with measurements near the denomination's standard."""
    specimens = []
    for coin_type in types:
        rng = _rng(seed, "specimens", coin_type.index)
        count = 3 + int(rng.random() < 0.35)
        for number in range(1, count + 1):
            srng = _rng(seed, "specimen", coin_type.index, number)
            wear = float(srng.beta(2, 3))
            patina_base = float(srng.beta(2, 2)) if coin_type.material != "gold" else float(srng.uniform(0, 0.2))
            # Worn coins lost metal: weight falls with wear, as in real hoards.
            weight = coin_type.weight_g * (1 - 0.08 * wear) * float(srng.normal(1.0, 0.035))
            diameter = coin_type.diameter_mm * float(srng.normal(1.0, 0.03))
            base_axis = 6 if coin_type.index % 2 else 12
            axis = (base_axis + int(srng.integers(-1, 2)) - 1) % 12 + 1
            specimens.append(
                DemoSpecimen(
                    record_id=f"DEMO.{coin_type.index + 1:03d}.{number}",
                    coin_type=coin_type,
                    number=number,
                    weight_g=round(weight, 2),
                    diameter_mm=round(diameter, 1),
                    axis=axis,
                    obverse=_look(srng, wear=wear, patina=patina_base, material=coin_type.material),
                    reverse=_look(srng, wear=wear, patina=patina_base, material=coin_type.material),
                )
            )
    return specimens


# --- Dies: height maps drawn with Pillow ---------------------------------------------------------


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow ships this font (Aileron) inside the package, so output does not depend on system fonts.
    return ImageFont.load_default(size=size)


class _Canvas:
    """Layers of a die's relief in unit coordinates (die radius 1, y down), mirrored when ``facing`` is -1.

    ``base`` holds raised flat areas (rounded at their edges), ``dome`` marks areas that swell in the
    middle (heads, bodies), ``detail`` adds fine raised lines and ``cut`` engraves fine recesses.
    """

    def __init__(
        self, size: int, radius: float, facing: int = 1, *, zoom: float = 1.0, dy: float = 0.0, clip: float = 0.0
    ) -> None:
        self.size = size
        self.radius = radius * zoom
        self.facing = facing
        self.dy = dy * radius
        self.clip_px = clip * radius
        self.layers = {name: Image.new("L", (size, size), 0) for name in ("base", "dome", "bump", "detail", "cut")}
        self.draws = {name: ImageDraw.Draw(image) for name, image in self.layers.items()}

    def p(self, x: float, y: float) -> tuple[float, float]:
        c = self.size / 2
        return (c + self.facing * x * self.radius, c + self.dy + y * self.radius)

    def pts(self, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [self.p(x, y) for x, y in points]

    def s(self, length: float) -> float:
        return length * self.radius

    def polygon(self, points, layer: str = "base", value: int = 255) -> None:
        self.draws[layer].polygon(self.pts(points), fill=value)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, layer: str = "base", value: int = 255) -> None:
        x0, y0 = self.p(cx - rx * self.facing, cy - ry)
        x1, y1 = self.p(cx + rx * self.facing, cy + ry)
        self.draws[layer].ellipse([min(x0, x1), y0, max(x0, x1), y1], fill=value)

    def line(self, points, width: float, layer: str = "base", value: int = 255) -> None:
        self.draws[layer].line(self.pts(points), fill=value, width=max(1, round(self.s(width))), joint="curve")
        for x, y in (points[0], points[-1]):
            self.ellipse(x, y, width / 2, width / 2, layer, value)

    def leaf(self, cx: float, cy: float, length: float, width: float, angle: float, layer: str = "base") -> None:
        """A pointed ellipse (laurel leaf, feather, flame) of ``length`` along ``angle`` radians."""
        ca, sa = math.cos(angle), math.sin(angle)
        points = []
        for t in np.linspace(0, 2 * math.pi, 18, endpoint=False):
            u, v = length / 2 * math.cos(t), width / 2 * math.sin(t) * abs(math.cos(t / 2)) ** 0.3
            points.append((cx + u * ca - v * sa, cy + u * sa + v * ca))
        self.polygon(points, layer)

    def text(self, x: float, y: float, text: str, height: float, layer: str = "base") -> None:
        font = _font(max(6, round(self.s(height))))
        self.draws[layer].text(self.p(x, y), text, fill=255, font=font, anchor="mm")

    def crescent(self, cx: float, cy: float, r: float, layer: str = "base") -> None:
        tmp = Image.new("L", (self.size, self.size), 0)
        draw = ImageDraw.Draw(tmp)
        x0, y0 = self.p(cx, cy)
        rr = self.s(r)
        draw.ellipse([x0 - rr, y0 - rr, x0 + rr, y0 + rr], fill=255)
        draw.ellipse([x0 - rr * 0.85, y0 - rr * 1.25, x0 + rr * 0.85, y0 + rr * 0.35], fill=0)
        self.layers[layer].paste(ImageChops.lighter(self.layers[layer], tmp))

    def star(self, cx: float, cy: float, r: float, points: int = 8, layer: str = "base", inner: float = 0.4) -> None:
        pts = []
        for k in range(points * 2):
            a = math.pi * k / points - math.pi / 2
            rad = r if k % 2 == 0 else r * inner
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        self.polygon(pts, layer)

    def field_mark(self, kind: str, x: float, y: float, letter: str) -> None:
        if kind == "star":
            self.star(x, y, 0.09, 6)
        elif kind == "crescent":
            self.crescent(x, y, 0.075)
        elif kind == "palm":
            self.line([(x, y + 0.13), (x, y - 0.13)], 0.018)
            for k in range(5):
                yy = y - 0.11 + k * 0.05
                self.line([(x, yy + 0.025), (x - 0.05, yy - 0.025)], 0.014)
                self.line([(x, yy + 0.025), (x + 0.05, yy - 0.025)], 0.014)
        elif kind == "letter":
            self.text(x, y, letter, 0.18)
        elif kind == "dot":
            self.ellipse(x, y, 0.035, 0.035)

    def legend(self, text: str, *, radius: float, start: float, end: float, height: float) -> None:
        """Letters along the rim, clockwise from ``start`` to at most ``end`` (degrees, 0 = top), tops outward."""
        if not text:
            return
        r_px = self.s(radius)
        size = max(8, round(self.s(height)))
        font = _font(size)
        spacing = 0.18 * size
        widths = [font.getlength(ch) + spacing for ch in text]
        arc = math.radians(end - start) * r_px
        if sum(widths) > arc:  # shrink to fit, as die-cutters crowded long legends
            size = max(8, int(size * arc / sum(widths)))
            font = _font(size)
            spacing = 0.18 * size
            widths = [font.getlength(ch) + spacing for ch in text]
        total = sum(widths)
        # Centre the legend on its arc, so a short legend does not bunch at one end.
        angle = math.radians((start + end) / 2) - total / r_px / 2
        image = self.layers["base"]
        box = int(size * 1.6)
        for ch, w in zip(text, widths, strict=True):
            theta = angle + w / 2 / r_px
            angle += w / r_px
            if ch == " ":
                continue
            glyph = Image.new("L", (box, box), 0)
            ImageDraw.Draw(glyph).text((box / 2, box / 2), ch, fill=255, font=font, anchor="mm")
            glyph = glyph.rotate(-math.degrees(theta), resample=Image.Resampling.BILINEAR)
            cx = self.size / 2 + r_px * math.sin(theta)
            cy = self.size / 2 - r_px * math.cos(theta)
            x0, y0 = round(cx - box / 2), round(cy - box / 2)
            region = (x0, y0, x0 + box, y0 + box)
            image.paste(ImageChops.lighter(image.crop(region), glyph), region[:2])

    def beads(self, radius: float, count: int, bead: float) -> None:
        for k in range(count):
            a = 2 * math.pi * k / count
            self.ellipse(radius * math.sin(a), -radius * math.cos(a), bead, bead)

    def height(self) -> np.ndarray:
        """Combine the layers into one height map (float32, 0 = field, about 1 = highest relief)."""
        base = np.asarray(self.layers["base"], dtype=np.float32) / 255
        dome = np.asarray(self.layers["dome"], dtype=np.float32) / 255
        detail = np.asarray(self.layers["detail"], dtype=np.float32) / 255
        cut = np.asarray(self.layers["cut"], dtype=np.float32) / 255
        bump = np.asarray(self.layers["bump"], dtype=np.float32) / 255
        if self.clip_px:
            # The design stops inside the border: busts are truncated there, like real ones.
            yy, xx = np.mgrid[0 : self.size, 0 : self.size]
            c = self.size / 2
            inside = ((xx - c + 0.5) ** 2 + (yy - c + 0.5) ** 2 <= self.clip_px**2).astype(np.float32)
            base, dome, detail, cut = base * inside, dome * inside, detail * inside, cut * inside
            bump = bump * inside
        scale = self.radius / 150
        h = 0.45 * _blur(base, 1.1 * scale)
        # Bodies swell towards their middle: a wide blur of the mask, kept inside the mask.
        dome_edge = _blur(dome, 1.2 * scale)
        h += (0.45 + 0.55 * np.clip(_blur(dome, 9 * scale) * 1.6 - 0.3, 0, 1)) * dome_edge
        if bump.any():
            h += 0.35 * _blur(bump, 10 * scale) * (dome > 0)
        h += 0.18 * _blur(detail, 0.9 * scale)
        h -= 0.22 * _blur(cut, 0.9 * scale)
        return h.astype(np.float32)


def _draw_portrait(c: _Canvas, p: Portrait, bust: str) -> None:
    s = p.scale * 1.38
    ox, oy = -0.03, 0.03

    def q(x: float, y: float) -> tuple[float, float]:
        return (ox + x * s, oy + y * s)

    def arc(r: float, cx: float, cy: float, a0: float, a1: float, n: int = 10) -> list[tuple[float, float]]:
        angles = np.linspace(math.radians(a0), math.radians(a1), n)
        return [q(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]

    cr = p.cranium
    hx, hy = -0.03, -0.14  # cranium centre
    # Bust first, the head on top of it; the canvas clips it at the border, as a truncated bust.
    if bust != "neck":
        shoulders = [q(-0.50, 0.80), q(-0.42, 0.46), q(-0.16, 0.37), q(0.12, 0.38), q(0.32, 0.50), q(0.42, 0.80)]
        c.polygon([*shoulders, q(0.42, 1.0), q(-0.50, 1.0)], "dome")
        c.ellipse(*q(-0.05, 0.62), 0.30 * s, 0.18 * s, "bump")
        if bust == "draped":
            for k in range(5):
                x = -0.38 + k * 0.15
                c.line([q(x, 0.46 + 0.04 * (k % 2)), q(x + 0.10, 0.60), q(x + 0.06, 0.80)], 0.014 * s, "cut")
            c.ellipse(*q(-0.28, 0.50), 0.045 * s, 0.045 * s, "detail")  # brooch
        else:
            c.line([q(-0.44, 0.60), q(0.36, 0.60)], 0.018 * s, "cut")
            for k in range(7):
                x = -0.42 + k * 0.11
                c.polygon([q(x, 0.62), q(x + 0.08, 0.62), q(x + 0.06, 0.78), q(x + 0.02, 0.78)], "detail")  # pteryges
            c.ellipse(*q(0.0, 0.49), 0.06 * s, 0.05 * s, "detail")  # gorgoneion
    # Neck, cut off square at the bottom on a truncated head.
    nk = p.neck
    bottom = 0.50 if bust == "neck" else 0.55
    c.polygon([q(-nk - 0.03, 0.0), q(0.12 + p.jaw / 2, 0.20), q(0.05 + nk * 0.5, bottom), q(-nk, bottom)], "dome")
    # Cranium and face profile (facing right in unit space; the canvas mirrors for left).
    c.ellipse(*q(hx, hy), cr * 1.06 * s, cr * s, "dome")
    face = [
        q(0.04, -0.44),
        q(0.20, -0.37),
        q(0.28 + p.brow, -0.19),
        q(0.275 + p.brow / 2, -0.14),
        q(0.33 + p.nose, -0.01 + p.nose_drop),
        q(0.285, 0.035),
        q(0.30, 0.075),
        q(0.28, 0.105),
        q(0.295, 0.135),
        q(0.265, 0.165),
        q(0.28 + p.chin, 0.21),
        q(0.20 + p.chin / 2, 0.255),
        q(0.05, 0.23 + p.jaw / 2),
        q(-0.12, 0.08),
        q(-0.05, -0.30),
    ]
    c.polygon(face, "dome")
    # Modelling: the skull, the cheek and the neck swell a little more than the flat relief.
    c.ellipse(*q(hx - 0.02, hy - 0.03), cr * 0.8 * s, cr * 0.75 * s, "bump")
    c.ellipse(*q(0.13, 0.05), 0.11 * s, 0.11 * s, "bump")
    c.ellipse(*q(-0.04, 0.33), 0.10 * s, 0.14 * s, "bump")
    # Eye, brow, ear, mouth.
    c.leaf(*q(0.205, -0.105), 0.10 * s, 0.05 * s, 0.05, "detail")
    c.ellipse(*q(0.215, -0.105), 0.017 * s, 0.019 * s, "cut")
    c.line(arc(0.09, 0.20, -0.09, 200, 320, 6), 0.014 * s, "detail")
    c.line([q(0.22, 0.105), q(0.28, 0.105)], 0.012 * s, "cut")
    c.line([q(0.20, 0.035), q(0.255, 0.055)], 0.01 * s, "cut")  # nostril
    c.ellipse(*q(-0.06, -0.03), 0.045 * s, 0.07 * s, "detail")
    c.ellipse(*q(-0.05, -0.025), 0.016 * s, 0.035 * s, "cut")
    # Hair: rows of curls, or locks combed from the crown, with a bun for queens.
    if p.hair == "curls":
        for row in range(3):
            rr = cr * (0.86 - 0.22 * row)
            count = 8 - 2 * row
            for k in range(count):
                a = math.radians(175 + 130 * k / (count - 1))
                x, y = hx + rr * math.cos(a), hy + rr * math.sin(a)
                c.ellipse(*q(x, y), 0.04 * s, 0.036 * s, "detail")
                c.ellipse(*q(x + 0.008, y + 0.006), 0.013 * s, 0.013 * s, "cut")
    else:
        crown = (hx - 0.04, hy - 0.05)
        for k in range(11):
            a = math.radians(150 + 165 * k / 10)
            bend = 0.25 if k % 2 else -0.25
            tip = (hx + 0.95 * cr * math.cos(a), hy + 0.93 * cr * math.sin(a))
            mid = (
                crown[0] + (tip[0] - crown[0]) * 0.55 + bend * 0.1 * math.sin(a),
                crown[1] + (tip[1] - crown[1]) * 0.55 - bend * 0.1 * math.cos(a),
            )
            c.line(
                [q(crown[0] + (tip[0] - crown[0]) * 0.3, crown[1] + (tip[1] - crown[1]) * 0.3), q(*mid), q(*tip)],
                0.013 * s,
                "cut",
            )
        if p.female:
            c.ellipse(*q(-0.30, 0.04), 0.11 * s, 0.09 * s, "dome")  # bun
            c.ellipse(*q(-0.30, 0.04), 0.11 * s, 0.09 * s, "bump")
            c.ellipse(*q(-0.30, 0.04), 0.05 * s, 0.04 * s, "cut")
    if p.beard:
        for k in range(8):
            t = k / 7
            x, y = -0.07 + 0.30 * t + p.chin * t, 0.07 + 0.17 * math.sin(math.pi * (0.3 + 0.6 * t))
            c.ellipse(*q(x, y), 0.038 * s, 0.038 * s, "detail")
            c.ellipse(*q(x + 0.006, y + 0.006), 0.012 * s, 0.012 * s, "cut")
    # Headgear.
    if p.headgear == "laurel":
        for k in range(9):
            a = math.radians(178 + 140 * k / 8)
            x, y = hx + 0.72 * cr * math.cos(a), hy + 0.72 * cr * math.sin(a)
            tangent = a + math.pi / 2
            for off in (-0.6, 0.6):
                lx, ly = x + 0.04 * math.cos(tangent + off), y + 0.04 * math.sin(tangent + off)
                c.leaf(*q(lx, ly), 0.14 * s, 0.06 * s, tangent + off, "base")
        c.line([q(-0.32, -0.10), q(-0.44, 0.06), q(-0.42, 0.16)], 0.02 * s, "detail")  # ties
        c.line([q(-0.32, -0.10), q(-0.34, 0.10), q(-0.30, 0.20)], 0.02 * s, "detail")
    elif p.headgear == "diadem":
        c.line(arc(cr * 0.78, hx, hy + 0.03, 190, 320, 10), 0.045 * s, "base")
        for x, y in arc(cr * 0.78, hx, hy + 0.03, 195, 315, 7):
            c.ellipse(x, y, 0.014 * s, 0.014 * s, "cut")
        c.line([q(-0.28, -0.10), q(-0.42, 0.10)], 0.024 * s, "detail")
        c.line([q(-0.28, -0.10), q(-0.34, 0.16)], 0.024 * s, "detail")
    elif p.headgear == "radiate":
        c.line(arc(cr * 0.88, hx, hy, 185, 325, 10), 0.04 * s, "base")
        for k in range(8):
            a = math.radians(200 + 110 * k / 7)
            x, y = hx + 0.92 * cr * math.cos(a), hy + 0.92 * cr * math.sin(a)
            tip = (x + 0.11 * math.cos(a), y + 0.11 * math.sin(a))
            side = (0.03 * -math.sin(a), 0.03 * math.cos(a))
            c.polygon([q(x - side[0], y - side[1]), q(*tip), q(x + side[0], y + side[1])], "base")
    elif p.headgear == "helmet":
        c.ellipse(*q(hx, hy - 0.03), cr * 1.12 * s, cr * 0.96 * s, "dome")
        c.line([q(0.29, -0.22), q(-0.36, -0.14)], 0.035 * s, "base")  # brim
        c.polygon([q(0.08, -0.47), q(-0.18, -0.58), q(-0.46, -0.44), q(-0.34, -0.36)], "base")  # crest
        for k in range(6):
            c.line([q(0.02 - 0.07 * k, -0.50 - 0.012 * k), q(-0.06 - 0.07 * k, -0.41)], 0.012 * s, "cut")
        c.polygon([q(0.02, -0.08), q(0.12, 0.02), q(0.04, 0.16), q(-0.08, 0.04)], "detail")  # cheek guard


def _draw_figure(c: _Canvas, params: dict, winged: bool) -> None:
    y0 = -0.05
    c.ellipse(0.0, y0 - 0.40, 0.075, 0.085, "dome")  # head
    c.polygon([(-0.09, y0 - 0.30), (0.09, y0 - 0.30), (0.17, y0 + 0.50), (-0.17, y0 + 0.50)], "dome")  # robe
    for k in range(4):
        c.line([(-0.10 + 0.065 * k, y0 - 0.18), (-0.14 + 0.09 * k, y0 + 0.48)], 0.012, "cut")  # folds
    c.line([(-0.09, y0 - 0.28), (-0.22, y0 - 0.10)], 0.04)  # arm to sceptre
    held = "palm" if winged else params.get("held", "sceptre")
    if held == "cornucopia":
        horn = [(-0.20, y0 - 0.05), (-0.16, y0 - 0.12), (-0.22, y0 - 0.32), (-0.30, y0 - 0.46), (-0.38, y0 - 0.44)]
        c.polygon([*horn, (-0.26, y0 - 0.30), (-0.24, y0 - 0.05)], "dome")
        for k in range(3):
            c.ellipse(-0.36 + 0.05 * k, y0 - 0.49 - 0.02 * (k % 2), 0.035, 0.035, "detail")
    else:
        c.line([(-0.24, y0 - 0.55), (-0.24, y0 + 0.52)], 0.022)  # sceptre, standard or palm
    if held == "standard":
        c.polygon([(-0.34, y0 - 0.52), (-0.14, y0 - 0.52), (-0.14, y0 - 0.34), (-0.34, y0 - 0.34)])
        c.line([(-0.31, y0 - 0.46), (-0.17, y0 - 0.46)], 0.012, "cut")
        c.ellipse(-0.24, y0 - 0.60, 0.035, 0.035, "detail")
    elif held == "palm":
        for k in range(5):
            yy = y0 - 0.52 + 0.06 * k
            c.line([(-0.24, yy + 0.03), (-0.31, yy - 0.03)], 0.012, "detail")
            c.line([(-0.24, yy + 0.03), (-0.17, yy - 0.03)], 0.012, "detail")
    elif held == "shield":
        c.ellipse(-0.12, y0 + 0.38, 0.12, 0.12, "base")
        c.ellipse(-0.12, y0 + 0.38, 0.04, 0.04, "detail")
    c.line([(0.08, y0 - 0.28), (0.22, y0 - 0.22), (0.32, y0 - 0.24)], 0.04)  # extended arm
    attr = params.get("attribute", "patera")
    if attr == "patera":
        c.ellipse(0.36, y0 - 0.24, 0.06, 0.025)
    elif attr == "wreath":
        c.ellipse(0.38, y0 - 0.27, 0.065, 0.065, "detail")
        c.ellipse(0.38, y0 - 0.27, 0.035, 0.035, "cut")
    elif attr == "globe":
        c.ellipse(0.37, y0 - 0.30, 0.06, 0.06, "dome")
    else:
        c.line([(0.32, y0 - 0.24), (0.42, y0 - 0.42)], 0.015)
        for k in range(3):
            c.leaf(0.35 + 0.03 * k, y0 - 0.30 - 0.05 * k, 0.07, 0.03, -0.5, "detail")
    c.polygon([(-0.15, y0 + 0.50), (-0.02, y0 + 0.50), (-0.05, y0 + 0.55), (-0.16, y0 + 0.55)])  # feet
    c.polygon([(0.02, y0 + 0.50), (0.15, y0 + 0.50), (0.18, y0 + 0.55), (0.04, y0 + 0.55)])
    if winged:
        c.polygon([(-0.06, y0 - 0.30), (-0.48, y0 - 0.62), (-0.40, y0 - 0.40), (-0.30, y0 - 0.18)], "base")
        c.polygon([(0.06, y0 - 0.30), (0.40, y0 - 0.70), (0.36, y0 - 0.46), (0.24, y0 - 0.20)], "base")
        for k in range(4):
            c.line([(-0.1 - 0.08 * k, y0 - 0.30 - 0.07 * k), (-0.2 - 0.05 * k, y0 - 0.2 - 0.05 * k)], 0.01, "cut")


def _draw_temple(c: _Canvas, params: dict) -> None:
    n = params["columns"]
    width = 0.28 + 0.09 * n
    c.polygon([(-width - 0.08, 0.40), (width + 0.08, 0.40), (width + 0.08, 0.50), (-width - 0.08, 0.50)])
    c.polygon([(-width - 0.04, 0.32), (width + 0.04, 0.32), (width + 0.04, 0.40), (-width - 0.04, 0.40)])
    for k in range(n):
        x = -width + 0.04 + (2 * width - 0.08) * k / (n - 1)
        c.polygon([(x - 0.03, -0.16), (x + 0.03, -0.16), (x + 0.03, 0.32), (x - 0.03, 0.32)], "dome")
        c.polygon([(x - 0.05, -0.20), (x + 0.05, -0.20), (x + 0.05, -0.15), (x - 0.05, -0.15)])
    c.polygon([(-width - 0.04, -0.30), (width + 0.04, -0.30), (width + 0.04, -0.20), (-width - 0.04, -0.20)])
    c.polygon([(-width - 0.08, -0.31), (width + 0.08, -0.31), (0.0, -0.58)])
    c.ellipse(0.0, -0.40, 0.04, 0.04, "cut")
    for x in (-width - 0.08, 0.0, width + 0.08):
        c.ellipse(x, -0.60 if x == 0 else -0.34, 0.035, 0.035, "detail")
    if params.get("statue"):
        c.ellipse(0.0, -0.08, 0.035, 0.04, "detail")
        c.polygon([(-0.035, -0.04), (0.035, -0.04), (0.05, 0.30), (-0.05, 0.30)], "detail")


def _draw_wreath(c: _Canvas, params: dict) -> None:
    for side in (-1, 1):
        for k in range(14):
            t = k / 13
            a = math.pi / 2 + side * math.pi * (0.08 + 0.8 * t)
            x, y = 0.66 * math.cos(a), 0.66 * math.sin(a)
            for off in (-0.4, 0.4):
                c.leaf(x, y, 0.18, 0.075, a + side * (math.pi / 2) + off * side, "base")
    c.ellipse(0.0, 0.66, 0.06, 0.05, "detail")
    lines = params["text"]
    height = 0.30 if len(lines) < 3 else 0.22
    for k, text in enumerate(lines):
        c.text(0.0, (k - (len(lines) - 1) / 2) * height * 1.05, text, height)


def _draw_eagle(c: _Canvas, params: dict) -> None:
    c.ellipse(0.0, 0.0, 0.12, 0.24, "dome")  # body
    c.ellipse(0.06, -0.30, 0.08, 0.07, "dome")  # head turned
    c.polygon([(0.12, -0.32), (0.22, -0.28), (0.13, -0.25)])  # beak
    c.ellipse(0.08, -0.31, 0.015, 0.015, "cut")
    for side in (-1, 1):
        wing = [(0.08 * side, -0.12), (0.52 * side, -0.42), (0.60 * side, -0.10)]
        for k in range(6):
            wing.append((0.58 * side - 0.07 * k * side, 0.02 + 0.05 * k))
        wing.append((0.1 * side, 0.1))
        c.polygon(wing, "base")
        for k in range(5):
            c.line([(0.16 * side, -0.05 + 0.02 * k), (0.52 * side - 0.07 * k * side, 0.0 + 0.05 * k)], 0.012, "cut")
    c.polygon([(-0.08, 0.2), (0.08, 0.2), (0.14, 0.42), (-0.14, 0.42)])  # tail
    perch = params["perch"]
    if perch == "globe":
        c.ellipse(0.0, 0.50, 0.10, 0.08, "dome")
    elif perch == "thunderbolt":
        c.polygon([(-0.30, 0.46), (0.30, 0.46), (0.24, 0.52), (-0.24, 0.52)])
        for side in (-1, 1):
            c.line([(0.05 * side, 0.49), (0.28 * side, 0.38), (0.22 * side, 0.45), (0.38 * side, 0.36)], 0.015)
    else:
        c.ellipse(0.0, 0.48, 0.14, 0.07, "detail")
        c.ellipse(0.0, 0.48, 0.09, 0.035, "cut")


def _draw_altar(c: _Canvas, params: dict) -> None:  # noqa: ARG001 - same signature as the other motifs
    c.polygon([(-0.28, 0.40), (0.28, 0.40), (0.28, 0.50), (-0.28, 0.50)])
    c.polygon([(-0.22, -0.05), (0.22, -0.05), (0.22, 0.40), (-0.22, 0.40)], "dome")
    c.polygon([(-0.28, -0.14), (0.28, -0.14), (0.28, -0.05), (-0.28, -0.05)])
    c.line([(-0.20, 0.05), (-0.08, 0.15), (0.0, 0.08), (0.08, 0.15), (0.20, 0.05)], 0.03, "detail")  # garland
    for k, (x, h) in enumerate(((-0.14, 0.22), (0.0, 0.34), (0.14, 0.24))):
        c.leaf(x, -0.14 - h / 2, h, 0.10, -math.pi / 2 + 0.15 * (k - 1), "base")


def _draw_star(c: _Canvas, params: dict) -> None:
    c.star(0.0, -0.12, 0.42, params["points"], "dome", inner=0.35)
    c.ellipse(0.0, -0.12, 0.08, 0.08, "detail")
    c.crescent(0.0, 0.36, 0.22)


def _draw_galley(c: _Canvas, params: dict) -> None:
    hull = [(-0.55, 0.05), (-0.40, 0.18), (0.40, 0.18), (0.60, -0.05), (0.48, 0.04), (-0.45, 0.04)]
    c.polygon(hull, "dome")
    c.line([(0.0, 0.06), (0.0, -0.52)], 0.025)  # mast
    c.polygon([(-0.24, -0.46), (0.24, -0.46), (0.20, -0.12), (-0.20, -0.12)], "base")  # sail
    for k in range(3):
        c.line([(-0.22 + 0.01 * k, -0.36 + 0.1 * k), (0.22 - 0.01 * k, -0.36 + 0.1 * k)], 0.01, "cut")
    for k in range(params["oars"]):
        x = -0.32 + 0.64 * k / max(1, params["oars"] - 1)
        c.line([(x, 0.14), (x - 0.08, 0.32)], 0.016)
    for k in range(3):
        c.line([(-0.5 + 0.35 * k, 0.40), (-0.4 + 0.35 * k, 0.37), (-0.3 + 0.35 * k, 0.40)], 0.012, "detail")


def _draw_gate(c: _Canvas, params: dict) -> None:
    c.polygon([(-0.40, -0.10), (0.40, -0.10), (0.40, 0.48), (-0.40, 0.48)], "base")
    for k in range(5):
        c.line([(-0.40, -0.02 + 0.1 * k), (0.40, -0.02 + 0.1 * k)], 0.01, "cut")  # courses of stone
    c.polygon([(-0.12, 0.48), (-0.12, 0.22), (0.0, 0.12), (0.12, 0.22), (0.12, 0.48)], "cut")
    n = params["towers"]
    for k in range(n):
        x = -0.34 + 0.68 * k / (n - 1)
        c.polygon([(x - 0.07, -0.34), (x + 0.07, -0.34), (x + 0.07, -0.08), (x - 0.07, -0.08)], "dome")
        for m in (-1, 1):
            c.polygon([(x + 0.045 * m - 0.02, -0.40), (x + 0.045 * m + 0.02, -0.40), (x + 0.045 * m + 0.02, -0.34)])
    c.star(0.0, -0.50, 0.08, 8)


def _draw_cornucopiae(c: _Canvas, params: dict) -> None:
    for side in (-1, 1):
        pts_outer, pts_inner = [], []
        for k in range(12):
            t = k / 11
            x = side * (0.10 - 0.42 * t + 0.10 * t * t)
            y = 0.45 - 0.85 * t
            w = 0.02 + 0.09 * t
            pts_outer.append((x - w * side * 0.5, y))
            pts_inner.append((x + w * side * 0.9, y))
        c.polygon(pts_outer + pts_inner[::-1], "dome")
        for k in range(4):
            c.ellipse(side * (-0.24 + 0.05 * k), -0.48 - 0.04 * (k % 2), 0.05, 0.05, "detail")
        for k in range(4):
            t = 0.2 + 0.18 * k
            x = side * (0.10 - 0.42 * t + 0.10 * t * t)
            c.line([(x - 0.05, 0.45 - 0.85 * t), (x + 0.07 * side, 0.45 - 0.85 * t - 0.03)], 0.012, "cut")
    if params.get("caduceus"):
        c.line([(0.0, 0.40), (0.0, -0.40)], 0.02)
        for k in range(3):
            c.ellipse(0.0, -0.32 + 0.1 * k, 0.05, 0.03, "detail")


def _draw_trophy(c: _Canvas, params: dict) -> None:  # noqa: ARG001
    c.line([(0.0, 0.50), (0.0, -0.55)], 0.03)
    c.line([(-0.30, -0.30), (0.30, -0.30)], 0.025)
    c.ellipse(0.0, -0.52, 0.08, 0.07, "dome")  # helmet
    c.polygon([(-0.14, -0.36), (0.14, -0.36), (0.11, 0.0), (-0.11, 0.0)], "dome")  # cuirass
    for k in range(5):
        c.polygon([(-0.12 + 0.05 * k, 0.0), (-0.08 + 0.05 * k, 0.0), (-0.09 + 0.05 * k, 0.12)], "detail")
    for side in (-1, 1):
        c.ellipse(0.30 * side, -0.30, 0.10, 0.10, "dome")
        c.ellipse(0.30 * side, -0.30, 0.03, 0.03, "detail")
        c.ellipse(0.32 * side, 0.32, 0.14, 0.14, "base")
        c.ellipse(0.32 * side, 0.32, 0.09, 0.09, "cut")


def _draw_palm(c: _Canvas, params: dict) -> None:
    for k in range(7):
        y = 0.48 - 0.12 * k
        c.polygon([(-0.04, y), (0.04, y), (0.035, y - 0.11), (-0.035, y - 0.11)], "dome")
    n = params["fronds"]
    for k in range(n):
        a = math.pi * (1.0 + k / (n - 1))
        end = (0.45 * math.cos(a), -0.36 + 0.28 * math.sin(a) + 0.18)
        c.line([(0.0, -0.36), ((end[0]) * 0.55, -0.36 + (end[1] + 0.36) * 0.55 - 0.06), end], 0.03)
        for m in range(5):
            t = 0.2 + 0.16 * m
            x, y = end[0] * t, -0.36 + (end[1] + 0.36) * t - 0.05 * math.sin(math.pi * t)
            c.line([(x, y), (x + 0.03 * math.cos(a + 1.2), y + 0.06)], 0.01, "detail")
    if params.get("captives"):
        for side in (-1, 1):
            c.ellipse(0.32 * side, 0.16, 0.05, 0.055, "dome")
            c.polygon([(0.32 * side - 0.08, 0.22), (0.32 * side + 0.08, 0.22), (0.34 * side + 0.1, 0.48)], "dome")
            c.polygon([(0.32 * side - 0.08, 0.22), (0.34 * side + 0.1, 0.48), (0.22 * side, 0.48)], "dome")


MOTIF_DRAWERS = {
    "figure": lambda c, p: _draw_figure(c, p, winged=False),
    "victory": lambda c, p: _draw_figure(c, p, winged=True),
    "temple": _draw_temple,
    "wreath": _draw_wreath,
    "eagle": _draw_eagle,
    "altar": _draw_altar,
    "star": _draw_star,
    "galley": _draw_galley,
    "gate": _draw_gate,
    "cornucopiae": _draw_cornucopiae,
    "trophy": _draw_trophy,
    "palm": _draw_palm,
}


@lru_cache(maxsize=8)
def _die(coin_type: CoinType, side: str, size: int) -> np.ndarray:
    """The height map of one side's die, drawn once per type and reused by all its specimens."""
    radius = size * 0.40
    if side == "obverse":
        canvas = _Canvas(size, radius, coin_type.portrait.facing, clip=0.93)
        _draw_portrait(canvas, coin_type.portrait, coin_type.bust)
        legend_canvas = _Canvas(size, radius)
        # Legends on portraits run from lower left over the top to lower right, broken by the bust.
        legend_canvas.legend(coin_type.obverse_legend, radius=0.86, start=-138, end=138, height=0.15)
    else:
        params = coin_type.reverse
        wreath = params["motif"] == "wreath"
        canvas = _Canvas(
            size, radius, params["facing"], zoom=1.2 if wreath else 1.12, dy=0 if wreath else -0.05, clip=0.93
        )
        MOTIF_DRAWERS[params["motif"]](canvas, params)
        legend_canvas = _Canvas(size, radius)
        legend_canvas.legend(coin_type.reverse_legend, radius=0.86, start=-120, end=120, height=0.15)
        if params["motif"] != "wreath":
            legend_canvas.line([(-0.62, 0.60), (0.62, 0.60)], 0.02)  # exergue line
            legend_canvas.text(0.0, 0.74, params["mint_mark"], 0.17)
            canvas_marks = legend_canvas
            canvas_marks.field_mark(params["field_left"], -0.52, 0.05, params["letter"])
            canvas_marks.field_mark(params["field_right"], 0.52, 0.05, params["letter"])
    legend_canvas.beads(0.985, 96, 0.022)
    height = canvas.height() + legend_canvas.height()
    height.setflags(write=False)  # cached and shared by specimens
    return height


# --- Rendering ----------------------------------------------------------------------------------

MATERIAL_COLOURS = {
    "gold": (np.array([0.86, 0.68, 0.30], np.float32), np.array([0.66, 0.50, 0.24], np.float32)),
    "silver": (np.array([0.78, 0.78, 0.79], np.float32), np.array([0.42, 0.40, 0.40], np.float32)),  # toning
    "bronze": (np.array([0.60, 0.41, 0.27], np.float32), np.array([0.32, 0.46, 0.36], np.float32)),  # green
}
SHINE = {"gold": 0.55, "silver": 0.6, "bronze": 0.25}


def _blur(array: np.ndarray, sigma: float) -> np.ndarray:
    # Truncating at 3 sigma is invisible here and a third faster than scipy's default of 4.
    return ndimage.gaussian_filter(array, sigma, truncate=3.0)


def _low_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a small random grid enlarged bicubically (cheap compared to a wide blur)."""
    grid = rng.random((cells, cells)).astype(np.float32)
    image = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image), 0, 1)


@lru_cache(maxsize=4)
def _polar(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - size / 2 + 0.5, yy - size / 2 + 0.5
    return np.hypot(dx, dy), np.arctan2(dy, dx)


def render_coin(
    coin_type: CoinType,
    side: str,
    look: Look,
    *,
    size: int = IMAGE_SIZE,
    light_azimuth: float | None = None,
    light_elevation: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One side of one specimen as (RGB float array in [0, 1], alpha in [0, 1]), coin centred.

    The light can be overridden (a phone photo of the same coin is lit differently).
    """
    rng = np.random.default_rng(look.noise_seed)
    die = _die(coin_type, side, size)
    # Strike: the die lands rotated and off-centre on the flan.
    shift_px = (look.shift[0] * size * 0.40, look.shift[1] * size * 0.40)
    die_image = Image.fromarray(die, mode="F").rotate(
        -look.rotation, resample=Image.Resampling.BILINEAR, translate=shift_px
    )
    height = np.asarray(die_image, dtype=np.float32)
    # Weak strike: part of the design came up faintly.
    if look.weak_strike:
        weak = _low_noise(rng, size, 3)
        height = height * (1 - look.weak_strike * np.clip(weak * 1.5 - 0.3, 0, 1))
    # Wear: blunted relief, high points flattened, a fine grain of scratches and pits.
    height = _blur(height, (0.6 + 2.4 * look.wear) * size / IMAGE_SIZE)
    cap = np.float32(1.1 - 0.55 * look.wear)
    height = np.where(height > cap, cap + (height - cap) * np.float32(0.3), height)
    grain = _blur(rng.standard_normal((size, size), dtype=np.float32), 1.0)
    height += np.float32(0.004 + 0.02 * look.wear) * grain
    # The flan: an irregular disc whose edge rounds off.
    rho, phi = _polar(size)
    outline = np.ones_like(rho)
    w = look.flan_wobble
    for k in range(len(w) // 2):
        outline += np.float32(w[2 * k]) * np.cos((k + 2) * phi + np.float32(w[2 * k + 1]))
    flan_r = np.minimum(np.float32(size * 0.45 * look.flan_scale) * outline, np.float32(size * 0.485))
    inside = flan_r - rho
    alpha = np.clip(inside + 0.5, 0, 1)
    edge = np.clip(inside / np.float32(size * 0.035), 0, 1)
    height = height * np.clip(inside / np.float32(size * 0.02), 0, 1) + np.float32(0.6) * np.sqrt(edge)
    # Shading: normals from the height map, a key light, some ambient and a metallic highlight.
    gy, gx = np.gradient(height * np.float32(32 * size / IMAGE_SIZE))
    inv_norm = 1 / np.sqrt(gx * gx + gy * gy + 1)
    az = math.radians(look.light_azimuth if light_azimuth is None else light_azimuth)
    el = math.radians(look.light_elevation if light_elevation is None else light_elevation)
    # Azimuth 135 = light from the upper left (image y grows downwards).
    lx, ly, lz = math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), math.sin(el)
    diffuse = np.clip((-gx * lx - gy * ly + lz) * inv_norm, 0, 1)
    # Half-vector of the light and a viewer straight above.
    hn = math.sqrt(lx * lx + ly * ly + (lz + 1) ** 2)
    spec = np.clip((-gx * lx - gy * ly + lz + 1) * inv_norm / hn, 0, 1)
    spec = spec * spec * spec
    spec = spec * spec
    spec = spec * spec
    spec = spec * spec  # the 24th power, by squaring (much faster than ** on arrays)
    # Colour: metal, patina in blotches and recesses, dirt in the recesses.
    metal, patina_colour = MATERIAL_COLOURS[coin_type.material]
    blotches = _low_noise(rng, size, 7) * 0.6 + _low_noise(rng, size, 19) * 0.4
    recess = np.clip((_blur(height, 4 * size / IMAGE_SIZE) - height) * 6, 0, 1)
    patina_mask = np.clip(look.patina * (blotches * 1.5 - 0.35) + look.patina * recess, 0, 1)[..., None]
    base = metal * np.array(look.tint, dtype=np.float32)
    colour = (base + (patina_colour - base) * patina_mask) * (1 - 0.35 * recess[..., None])
    shine = np.float32(SHINE[coin_type.material]) * (1 - 0.7 * patina_mask)
    rgb = colour * (0.30 + 0.85 * diffuse[..., None]) + shine * spec[..., None]
    return np.clip(rgb, 0, 1), alpha


def catalogue_image(coin_type: CoinType, side: str, look: Look, *, size: int = IMAGE_SIZE) -> Image.Image:
    """A catalogue photograph: the coin on a plain light background with a soft shadow."""
    rgb, alpha = render_coin(coin_type, side, look, size=size)
    offset = max(1, round(size * 0.012))
    shadow = Image.fromarray((alpha * 255).astype(np.uint8), mode="L")
    shadow = shadow.transform(shadow.size, Image.Transform.AFFINE, (1, 0, -offset, 0, 1, -offset))
    shadow = np.asarray(shadow.filter(ImageFilter.GaussianBlur(size * 0.012)), dtype=np.float32) / 255
    background = np.array([0.94, 0.94, 0.93], dtype=np.float32)
    canvas = background * (1 - 0.25 * shadow[..., None])
    a = alpha[..., None]
    out = canvas + (rgb - canvas) * a
    return Image.fromarray((out * 255 + 0.5).astype(np.uint8), mode="RGB")


# --- The CSV folder -------------------------------------------------------------------------------


def _image_name(record_id: str, side: str) -> str:
    return f"{record_id}.{side[:3]}.jpg"


def _render_specimens(job: tuple[list[DemoSpecimen], str, int]) -> None:
    """Render and save both sides of some specimens (one type per job, so its dies are drawn once)."""
    specimens, images_dir, size = job
    for specimen in specimens:
        for side in ("obverse", "reverse"):
            image = catalogue_image(specimen.coin_type, side, specimen.look(side), size=size)
            image.save(Path(images_dir) / _image_name(specimen.record_id, side), format="JPEG", quality=90)
    _die.cache_clear()


def demo_generate(
    out_dir: Path,
    *,
    n_types: int = DEFAULT_TYPES,
    seed: int = DEFAULT_SEED,
    size: int = IMAGE_SIZE,
    workers: int = 1,
) -> DemoCollection:
    """Write the demo collection to ``out_dir``: ``demo.csv`` in the generic layout and ``images/``.

    Deterministic in ``seed``: the same arguments give the same bytes, whatever ``workers`` is.
    ``workers`` > 1 renders in that many processes; only call it so from code run under an
    ``if __name__ == "__main__"`` guard (``manage.py`` is), since worker processes are spawned.
    """
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    types = demo_types(n_types=n_types, seed=seed)
    specimens = demo_specimens(types, seed=seed)
    jobs = [([s for s in specimens if s.coin_type is t], str(images_dir), size) for t in types]
    if workers > 1:
        # "spawn": the caller may hold threads (a web server, torch) that a forked child must not inherit.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            list(pool.map(_render_specimens, jobs))
    else:
        for job in jobs:
            _render_specimens(job)
    rows = []
    for specimen in specimens:
        t = specimen.coin_type
        paths = {side: f"images/{_image_name(specimen.record_id, side)}" for side in ("obverse", "reverse")}
        rows.append(
            {
                "record_id": specimen.record_id,
                "title": f"{t.ruler_label}, {t.denomination} ({specimen.record_id})",
                "item_uri": t.uri,
                "item_reference": t.reference,
                "item_title": t.title,
                "authority": t.ruler_label,
                "authority_uri": "",
                "mint": t.mint,
                "mint_uri": "",
                "region": f"{t.realm} (fictional)",
                "material": MATERIAL_LABELS[t.material],
                "material_uri": "",
                "denomination": t.denomination.capitalize(),
                "denomination_uri": "",
                "object_type": "Coin",
                "date_from": t.date_from,
                "date_to": t.date_to,
                "obverse_legend": t.obverse_legend,
                "obverse_description": t.obverse_description,
                "reverse_legend": t.reverse_legend,
                "reverse_description": t.reverse_description,
                "weight_g": f"{specimen.weight_g:.2f}",
                "diameter_mm": f"{specimen.diameter_mm:.1f}",
                "axis": specimen.axis,
                "source_url": "",
                "obverse_image": paths["obverse"],
                "reverse_image": paths["reverse"],
            }
        )
    csv_path = out_dir / CSV_NAME
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return DemoCollection(csv_path=csv_path, types=types, specimens=specimens)


# --- Phone-like photos for the identify page ---------------------------------------------------


def _wood(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A wooden table top: planks of wavy grain with fine streaks along it."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    warp = _low_noise(rng, max(width, height), 4)[:height, :width]
    period = float(rng.uniform(9, 16))
    grain = np.sin(2 * math.pi * (yy / period + 6 * warp + 0.002 * xx)) ** 2
    streaks = ndimage.gaussian_filter(rng.standard_normal((height, width)).astype(np.float32), (0.7, 12))
    plank = (yy // int(rng.integers(140, 220))) % 2  # neighbouring planks differ a little in tone
    tone = 0.5 + 0.3 * grain + 0.9 * streaks - 0.06 * plank
    palette = [((0.66, 0.47, 0.30), (0.42, 0.27, 0.15)), ((0.80, 0.66, 0.47), (0.58, 0.43, 0.27))]
    light, dark = (np.array(c, dtype=np.float32) for c in palette[int(rng.integers(len(palette)))])
    return dark + (light - dark) * np.clip(tone, 0, 1)[..., None]


def _cloth(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A coloured cloth: a fine weave and soft folds."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = float(rng.uniform(3.0, 5.0))
    weave = 0.5 + 0.5 * np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period)
    folds = _low_noise(rng, max(width, height), 4)[:height, :width]
    colours = [(0.15, 0.25, 0.45), (0.45, 0.12, 0.15), (0.20, 0.35, 0.22), (0.35, 0.33, 0.30), (0.10, 0.10, 0.12)]
    colour = np.array(colours[int(rng.integers(len(colours)))], dtype=np.float32)
    return colour * (0.75 + 0.2 * weave + 0.6 * (folds - 0.5))[..., None]


def _clutter(photo: Image.Image, rng: np.random.Generator) -> None:
    """Things that lie about on a desk: a paper label or a pen, partly in the frame."""
    draw = ImageDraw.Draw(photo)
    width, height = photo.size
    for _ in range(int(rng.integers(0, 3))):
        cx, cy = rng.uniform(0, width), rng.choice([rng.uniform(-40, 60), rng.uniform(height - 60, height + 40)])
        angle = rng.uniform(0, math.pi)
        if rng.random() < 0.5:
            half = (rng.uniform(60, 120), rng.uniform(30, 50))  # paper label
            fill = tuple(int(v) for v in rng.uniform(215, 245, 3))
        else:
            half = (rng.uniform(90, 160), rng.uniform(5, 9))  # pen
            fill = tuple(int(v) for v in rng.uniform(10, 120, 3))
        ca, sa = math.cos(angle), math.sin(angle)
        corners = [(sx * half[0], sy * half[1]) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        draw.polygon([(cx + u * ca - v * sa, cy + u * sa + v * ca) for u, v in corners], fill=fill)


def phone_photo(coin_type: CoinType, side: str, look: Look, *, seed: int) -> Image.Image:
    """A phone-like photograph of one specimen side: re-lit, rotated anywhere, off-centre on a cluttered table."""
    rng = np.random.default_rng(seed)
    width, height = (800, 600) if rng.random() < 0.5 else (600, 800)
    coin_px = int(rng.uniform(0.42, 0.68) * min(width, height))
    rotation = float(rng.uniform(0, 360))
    # The lamp is at the upper left of the scene; in the coin's own frame that direction turns with it.
    scene_light = float(rng.uniform(100, 170))
    rgb, alpha = render_coin(
        coin_type,
        side,
        look,
        size=coin_px,
        light_azimuth=scene_light - rotation,
        light_elevation=float(rng.uniform(30, 60)),
    )
    coin = Image.fromarray((np.dstack([rgb, alpha]) * 255 + 0.5).astype(np.uint8), mode="RGBA")
    # Held at a slight angle: an anisotropic scale, then any rotation.
    squash = float(rng.uniform(0.88, 1.0))
    coin = coin.resize((coin_px, max(1, int(coin_px * squash))), Image.Resampling.BICUBIC)
    coin = coin.rotate(rotation, resample=Image.Resampling.BICUBIC, expand=True)
    background = (_wood if rng.random() < 0.5 else _cloth)(rng, width, height)
    photo = Image.fromarray((np.clip(background, 0, 1) * 255).astype(np.uint8), mode="RGB")
    _clutter(photo, rng)
    x = int(rng.uniform(0.1, 0.9) * (width - coin.width))
    y = int(rng.uniform(0.1, 0.9) * (height - coin.height))
    shadow = coin.getchannel("A").filter(ImageFilter.GaussianBlur(7)).point(lambda v: int(v * 0.6))
    photo.paste(Image.new("RGB", coin.size, (20, 15, 10)), (x + 7, y + 9), shadow)
    photo.paste(coin, (x, y), coin)
    # Uneven light (a lamp to one side, a warm cast), sensor noise, slight defocus.
    arr = np.asarray(photo, dtype=np.float32) / 255
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = rng.uniform(0, width * 0.5), rng.uniform(0, height * 0.5)
    falloff = 1.15 - 0.6 * np.hypot(xx - cx, yy - cy) / math.hypot(width, height)
    warm = np.array([1.0 + rng.uniform(0, 0.08), 1.0, 1.0 - rng.uniform(0, 0.12)], dtype=np.float32)
    arr = arr * falloff[..., None] * warm + rng.normal(0, 0.015, arr.shape).astype(np.float32)
    photo = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8), mode="RGB")
    return photo.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.3))))


def example_photos(
    out_dir: Path,
    n: int = 8,
    seed: int = 0,
    *,
    collection_seed: int = DEFAULT_SEED,
    n_types: int = DEFAULT_TYPES,
) -> list[tuple[Path, str, str]]:
    """Phone-like photos of ``n`` specimens of the demo collection built with ``collection_seed``/``n_types``.

    Returns ``[(path, record_id, side)]``; the record ids are those the demo CSV imports, so the
    identify page can say which catalogue specimen each example shows. JPEG quality 70, as phones
    and messaging apps deliver them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specimens = demo_specimens(demo_types(n_types=n_types, seed=collection_seed), seed=collection_seed)
    rng = _rng(seed, "examples")
    # Spread the examples over types: pick distinct types first, then any specimen of each.
    by_type: dict[int, list[DemoSpecimen]] = {}
    for specimen in specimens:
        by_type.setdefault(specimen.coin_type.index, []).append(specimen)
    type_order = rng.permutation(sorted(by_type))
    results = []
    for k in range(n):
        group = by_type[int(type_order[k % len(type_order)])]
        specimen = group[int(rng.integers(len(group)))]
        side = "obverse" if k % 2 == 0 else "reverse"
        photo = phone_photo(specimen.coin_type, side, specimen.look(side), seed=int(rng.integers(0, 2**31)))
        path = out_dir / f"example-{k + 1:02d}-{specimen.record_id}.{side[:3]}.jpg"
        photo.save(path, format="JPEG", quality=70)
        results.append((path, specimen.record_id, side))
    _die.cache_clear()
    return results


def write_examples_manifest(out_dir: Path, examples: list[tuple[Path, str, str]]) -> Path:
    """``examples.json`` beside the example photos: file name, record id and side of each."""
    manifest = Path(out_dir) / "examples.json"
    data = [{"file": path.name, "record_id": record_id, "side": side} for path, record_id, side in examples]
    manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return manifest


def contact_sheet(image_paths: list[Path], *, columns: int = 8, thumb: int = 160) -> Image.Image:
    """A grid of thumbnails, for looking at the generated coins."""
    rows = math.ceil(len(image_paths) / columns)
    sheet = Image.new("RGB", (columns * thumb, rows * thumb), "white")
    for k, path in enumerate(image_paths):
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((thumb, thumb))
            sheet.paste(image, ((k % columns) * thumb, (k // columns) * thumb))
    return sheet
