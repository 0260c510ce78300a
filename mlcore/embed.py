"""Image embeddings for coin retrieval: one L2-normalised vector per upright cut-out.

Catalogue images and queries go through the same function: an upright cut-out on neutral grey
(``mlcore.cutout``) → greyscale (patina colour differs between specimens of one type and phone light
casts colour; relief does not) → reduced to 128 px and softened (queries are small and blurred;
bringing the catalogue to the same level of detail pays; 128 px did better than 112 and 160 px on
plain and on extra-blurred queries, 160 better than 200 px or no reduction) → a disc mask (the
corners are background) → MobileNetV2's block-17 maps (320 channels) at ``input_size`` →
generalised-mean (GeM) pooling in each quarter of a 2×2 grid, which
keeps the strongest local responses (legend letters, a mint mark) and *where* they are (the
rotation search turns the query, so the descriptor may depend on orientation; it also makes the
best turn a sharper estimate of the angle) → signed square root and L2 → an optional learned
projection (whitening learned from the catalogue, see ``projection_fit``) → L2.

The vector always has ``EMBED_DIM`` components (a projection to fewer dimensions is zero-padded), so
the database column never changes width; ``Embedder.version`` names the recipe and, when a learned
projection is used, the trained version it came from, so re-indexing is a managed operation.
Figures behind these choices: docs/ml-notes.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from mlcore.backbone import FEATURE_DIM, WEIGHTS, Backbone
from mlcore.base import LazyModel, register
from mlcore.modelfiles import ModelFileError

EMBED_DIM = FEATURE_DIM  # 1280: the width of the database column
# Output channels of MobileNetV2's last blocks (torchvision's ``features`` indices).
LAYER_CHANNELS = {16: 160, 17: 320, 18: 1280}
SIDE_BLOCK = 13  # the side network (``mlcore.side``) starts from this block's maps
LAYOUT_DIM = 4 * FEATURE_DIM  # ``Embedder.descriptors_and_layout``: the last block's maps on a 2×2 grid
FILENAME = "embed.npz"
NEUTRAL = (128, 128, 128)


class Reading(NamedTuple):
    """What one backbone pass over a batch of cut-outs gives (``Embedder.read``)."""

    descriptors: np.ndarray  # (N, config.dim) pooled, signed-sqrt, L2-normalised
    layout: np.ndarray | None  # (N, LAYOUT_DIM) the orientation's features, when asked for
    stems: torch.Tensor | None  # (N, 96, h, w) float16 block-13 maps, the side network's input, when asked for


@dataclass(frozen=True)
class EmbedConfig:
    """The fixed recipe of an embedding (changing any field changes ``Embedder.version``)."""

    input_size: int = 256
    grey: bool = True
    disc: bool = True
    gem_p: float = 3.0
    signed_sqrt: bool = True
    # Every input is first reduced to ``lowpass`` px and softened by ``soften`` px (0 = off): queries
    # are small and blurred, so the catalogue is brought to the same level of detail.
    lowpass: int = 128
    soften: float = 1.25
    # Pool the maps of MobileNetV2's block ``layer`` (18: the last, 1280 channels; 17: 320 channels)
    # separately in each cell of a ``grid``×``grid`` split; the cells' vectors are concatenated, so the
    # descriptor keeps where on the coin a response is (the legend's letters above or below the head).
    layer: int = 17
    grid: int = 2
    # Which weights the backbone reads (``mlcore.backbone.WEIGHTS``): the ImageNet ones or the project's
    # own, trained for coins on this very recipe (``mlcore.train_backbone``).
    backbone: str = "imagenet"

    def tag(self) -> str:
        low = f"-low{self.lowpass}b{self.soften:g}" if self.lowpass else ""
        cells = f"-l{self.layer}g{self.grid}" if (self.layer, self.grid) != (18, 1) else ""
        weights = "" if self.backbone == "imagenet" else f"{self.backbone}-"
        return (
            f"{weights}s{self.input_size}{'-grey' if self.grey else ''}{'-disc' if self.disc else ''}"
            f"-gem{self.gem_p:g}{'-sqrt' if self.signed_sqrt else ''}{low}{cells}"
        )

    def __post_init__(self) -> None:
        if self.backbone not in WEIGHTS:
            raise ValueError(f"Embedding recipe: unknown backbone weights {self.backbone!r} (known: {sorted(WEIGHTS)})")
        if self.layer not in LAYER_CHANNELS or self.grid < 1 or self.dim > EMBED_DIM:
            raise ValueError(
                f"Embedding recipe: block {self.layer} pooled on a {self.grid}×{self.grid} grid does not fit "
                f"the {EMBED_DIM}-wide database column (blocks: {sorted(LAYER_CHANNELS)})."
            )

    @property
    def dim(self) -> int:
        """Width of the pooled descriptor: the block's channels times the grid's cells."""
        return LAYER_CHANNELS[self.layer] * self.grid * self.grid


# The recipes an installation can embed with (``OBVERSE_EMBEDDING``, default ``DEFAULT_RECIPE``).
# ``imagenet`` is the recipe of the ImageNet backbone: every photo reduced to 128 px and softened,
# because that backbone could only be matched with the worst queries by bringing the catalogue down
# to their level of detail. ``coins`` reads the project's backbone trained for coins, at the size
# and on the input it was trained on (``mlcore.train_backbone``); it learnt to see through poor
# photos itself, so a good photo keeps its legend and mint-mark detail (docs/ml-notes.md).
RECIPES = {
    "imagenet": EmbedConfig(),
    # Trained at 224 px, read at 256: on the split's validation types (never its test types) 256 px
    # found the type as often or more than 224 px, with or without softening (docs/ml-notes.md).
    "coins": EmbedConfig(input_size=256, lowpass=0, soften=0.0, backbone="coins"),
}
DEFAULT_RECIPE = "coins"
DEFAULT_CONFIG = RECIPES[DEFAULT_RECIPE]


def default_config() -> EmbedConfig:
    """The recipe this installation embeds with: ``OBVERSE_EMBEDDING`` (a name in ``RECIPES``), else the default."""
    import os

    name = os.environ.get("OBVERSE_EMBEDDING") or DEFAULT_RECIPE
    if name not in RECIPES:
        raise ValueError(f"OBVERSE_EMBEDDING={name!r} is not an embedding recipe ({', '.join(sorted(RECIPES))})")
    return RECIPES[name]


def prepare(image: Image.Image, config: EmbedConfig | None = None) -> Image.Image:
    """The backbone's input for one cut-out: square, greyscale (as RGB), outside the inscribed disc neutral."""
    config = config or default_config()
    rgb = image.convert("RGB")
    if config.lowpass and max(rgb.size) > config.lowpass:
        rgb = rgb.resize((config.lowpass, config.lowpass), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if config.soften:
        rgb = rgb.filter(ImageFilter.GaussianBlur(config.soften))
    if rgb.size != (config.input_size, config.input_size):
        rgb = rgb.resize((config.input_size, config.input_size), Image.Resampling.BILINEAR)
    if config.grey:
        rgb = rgb.convert("L").convert("RGB")
    if config.disc:
        mask = Image.new("L", rgb.size, 0)
        ImageDraw.Draw(mask).ellipse([0, 0, rgb.width - 1, rgb.height - 1], fill=255)
        rgb = Image.composite(rgb, Image.new("RGB", rgb.size, NEUTRAL), mask)
    return rgb


def gem(maps: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the spatial axes: (N, C, h, w) → (N, C). p=1 is average pooling."""
    if p == 1.0:
        return maps.mean(dim=(2, 3))
    return maps.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def grid_gem(maps: torch.Tensor, grid: int = 1, p: float = 3.0) -> torch.Tensor:
    """GeM in each cell of a grid×grid split, cells concatenated row by row: (N, C, h, w) → (N, C·grid²)."""
    if grid == 1:
        return gem(maps, p)
    h, w = maps.shape[2:]
    cells = [
        gem(maps[:, :, row * h // grid : (row + 1) * h // grid, col * w // grid : (col + 1) * w // grid], p)
        for row in range(grid)
        for col in range(grid)
    ]
    return torch.cat(cells, dim=1)


def global_descriptors(descriptors: np.ndarray, config: EmbedConfig | None = None) -> np.ndarray:
    """The descriptors one GeM over the whole map would give, from grid descriptors (signed-sqrt, L2).

    For parts that must not depend on where things are on the coin (the side classifier: a turned
    cut-out should look like the same side). Exact when the grid's cells are equal (8×8 maps at
    256 px): the whole map's p-mean is the mean of the cells' p-means, and the common scale the L2
    normalisation applied cancels in the final L2. No extra backbone pass.
    """
    config = config or default_config()
    vectors = np.asarray(descriptors, dtype=np.float64)
    if config.grid == 1:
        return l2n(vectors)
    cells = vectors.reshape(len(vectors), config.grid * config.grid, -1)
    pooled = cells**2 if config.signed_sqrt else cells  # back to (a common multiple of) the cells' GeM
    pooled = np.mean(np.maximum(pooled, 0.0) ** config.gem_p, axis=1) ** (1.0 / config.gem_p)
    return l2n(np.sqrt(pooled) if config.signed_sqrt else pooled)


def l2n(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


@dataclass
class Projection:
    """A learned linear map applied to pooled descriptors: y = (x − mean) @ matrix, then L2."""

    mean: np.ndarray  # (D,)
    matrix: np.ndarray  # (D, d), d ≤ EMBED_DIM
    tag: str = ""

    def apply(self, descriptors: np.ndarray) -> np.ndarray:
        projected = (np.asarray(descriptors, dtype=np.float32) - self.mean) @ self.matrix
        return l2n(projected)

    def save(self, path: Path) -> Path:
        path = Path(path)
        with path.open("wb") as fh:
            np.savez(fh, mean=self.mean.astype(np.float32), matrix=self.matrix.astype(np.float32), tag=self.tag)
        return path

    @classmethod
    def load(cls, path: Path) -> Projection:
        with np.load(path, allow_pickle=False) as data:
            return cls(mean=data["mean"], matrix=data["matrix"], tag=str(data["tag"]))


def projection_fit(
    anchors: np.ndarray,
    positives: np.ndarray,
    *,
    background: np.ndarray | None = None,
    dim: int = 512,
    shrinkage: float = 0.1,
    weights: np.ndarray | None = None,
    negatives: tuple[np.ndarray, np.ndarray] | None = None,
    negative_share: float = 0.5,
) -> Projection:
    """Learned whitening (Radenović et al.) from matching pairs of pooled descriptors.

    ``anchors[i]`` and ``positives[i]`` show the same coin or type (a clean catalogue image and a
    phone-like copy of it, or two specimens of one type). The within-pair scatter is whitened
    (directions in which matches differ are shrunk), then the remaining variance of ``background``
    descriptors (default: anchors and positives) is kept along its ``dim`` main axes.

    ``weights`` (one per pair) lets some matching pairs count more than others (a reviewed phone
    photo and its accepted catalogue item show the real query gap; synthetic copies only imitate
    it). ``negatives`` = (queries, wrong) are non-matching pairs, e.g. a reviewed photo and the
    look-alike items ranked above the true one: in the second step (Radenović's supervised
    whitening) the axes kept are those of the non-matching scatter, here ``negative_share`` of
    hard-negative differences mixed with the background scatter (which stands for random pairs).
    Without ``weights`` and ``negatives`` the result is exactly the plain learned whitening.
    """
    anchors = np.asarray(anchors, dtype=np.float64)
    positives = np.asarray(positives, dtype=np.float64)
    everything = np.concatenate([anchors, positives]) if background is None else np.asarray(background, np.float64)
    mean = everything.mean(axis=0)
    differences = anchors - positives
    if weights is None:
        within = differences.T @ differences / max(1, len(differences))
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(w) != len(differences) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be one non-negative number per pair, not all zero")
        within = (differences * w[:, None]).T @ differences / w.sum()
    # Shrink towards the identity (scaled) so rarely-seen directions do not explode.
    within = (1 - shrinkage) * within + shrinkage * np.trace(within) / len(within) * np.eye(len(within))
    values, vectors = np.linalg.eigh(within)
    whiten = vectors @ np.diag(1.0 / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
    centred = (everything - mean) @ whiten
    between = centred.T @ centred / max(1, len(centred))
    if negatives is not None and len(negatives[0]):
        hard = (np.asarray(negatives[0], np.float64) - np.asarray(negatives[1], np.float64)) @ whiten
        # A random pair's difference has twice one sample's scatter: halve it to mix on one scale.
        hard_scatter = hard.T @ hard / (2 * len(hard))
        between = (1 - negative_share) * between + negative_share * hard_scatter
    values_b, vectors_b = np.linalg.eigh(between)
    order = np.argsort(values_b)[::-1][: min(dim, EMBED_DIM, len(values_b))]
    matrix = whiten @ vectors_b[:, order]
    return Projection(mean=mean.astype(np.float32), matrix=matrix.astype(np.float32), tag=f"lw{len(order)}")


@register
class Embedder(LazyModel):
    """Pretrained MobileNetV2 maps, GeM-pooled on greyscale disc-masked cut-outs, optionally projected.

    ``projection``: a ``Projection``, a path to an ``embed.npz`` (or its folder), or None to use the
    active trained version's ``embed.npz`` when it has one (``use_trained=False`` turns that off;
    ``pinned_version`` uses that trained version instead of the active one).
    """

    name = "coin-embedding"
    recipe = "gem-1"

    def __init__(
        self,
        models_dir,
        *,
        config: EmbedConfig | None = None,
        projection: Projection | str | Path | None = None,
        use_trained: bool = True,
        backbone: Backbone | None = None,
        batch_size: int = 32,
        pinned_version: str | None = None,
    ) -> None:
        super().__init__(models_dir)
        self.pinned_version = pinned_version
        self.config = config or default_config()
        config = self.config
        self.backbone = backbone or Backbone(models_dir, weights=config.backbone, input_size=config.input_size)
        self._projection_arg = projection
        self.use_trained = use_trained
        self.batch_size = batch_size
        self.projection: Projection | None = None
        self.trained_version = ""

    @property
    def base_version(self) -> str:
        """The recipe without any learned projection: what trained parts must have been fitted on."""
        return f"{self.recipe}-{self.config.tag()}"

    @property
    def version(self) -> str:  # type: ignore[override]
        self.ensure_loaded()
        base = self.base_version
        if self.projection is None:
            return base
        return f"{base}+{self.projection.tag}" + (f"@{self.trained_version}" if self.trained_version else "")

    def _load(self) -> bool:
        self.backbone.ensure_loaded()
        arg = self._projection_arg
        if isinstance(arg, Projection):
            self.projection = arg
        elif arg is not None:
            path = Path(arg)
            self.projection = Projection.load(path / FILENAME if path.is_dir() else path)
        elif self.use_trained:
            from mlcore.versions import resolve

            try:
                path, self.trained_version = resolve(
                    self.models_dir, FILENAME, recipe=self.base_version, version=self.pinned_version
                )
            except ModelFileError:
                path = None  # nothing trained (or no projection in it, or for another recipe): the plain recipe
            if path is not None:
                self.projection = Projection.load(path)
        return True

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}

    def descriptors(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, ``config.dim``) pooled descriptors before any learned projection (signed-sqrt, L2-normalised)."""
        return self.read(images).descriptors

    def descriptors_and_layout(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(descriptors, layout) from one pass: ``descriptors`` as above; ``layout`` (N, 4·1280) for orientation.

        ``layout``: the last block's maps (one 1×1 convolution after the embedding's block, so nearly
        free) averaged in each quarter, signed square root: where the head or the standing figure
        sits, which is what the orientation estimator reads (``mlcore.orientation``).
        """
        reading = self.read(images, layout=True)
        return reading.descriptors, reading.layout

    @torch.inference_mode()
    def read(self, images: Sequence[Image.Image], *, layout: bool = False, stems: bool = False) -> Reading:
        """One backbone pass over ``images``: descriptors, and the layout and stems when asked for.

        ``stems``: block 13's maps (N, 96, 16, 16 at 256 px; float16 to halve what training keeps),
        the side network's input (``mlcore.side``): the side reads the same pass as the embedding.
        """
        self.ensure_loaded()
        from mlcore.backbone import to_tensor

        layer = self.config.layer
        layers = [layer] + ([18] if layout and layer != 18 else []) + ([SIDE_BLOCK] if stems else [])
        out, layouts, stem_maps = [], [], []
        for start in range(0, len(images), self.batch_size):
            batch = [prepare(image, self.config) for image in images[start : start + self.batch_size]]
            maps = self.backbone.maps(to_tensor(batch, self.config.input_size), layers)
            pooled = grid_gem(maps[layer], self.config.grid, self.config.gem_p)
            if self.config.signed_sqrt:
                pooled = pooled.sign() * pooled.abs().sqrt()
            out.append(pooled.numpy())
            if layout:
                layouts.append(torch.nn.functional.adaptive_avg_pool2d(maps[18], 2).flatten(1).sqrt().numpy())
            if stems:
                stem_maps.append(maps[SIDE_BLOCK].half())
        if not out:
            return Reading(
                np.zeros((0, self.config.dim), dtype=np.float32),
                np.zeros((0, LAYOUT_DIM), dtype=np.float32) if layout else None,
                torch.zeros((0, 96, self.config.input_size // 16, self.config.input_size // 16), dtype=torch.float16)
                if stems
                else None,
            )
        return Reading(
            l2n(np.concatenate(out)),
            np.concatenate(layouts).astype(np.float32) if layout else None,
            torch.cat(stem_maps) if stems else None,
        )

    def embed_descriptors(self, descriptors: np.ndarray) -> np.ndarray:
        """Descriptors → final embeddings (projection if any, zero-padded to EMBED_DIM, L2-normalised)."""
        self.ensure_loaded()
        vectors = self.projection.apply(descriptors) if self.projection is not None else l2n(descriptors)
        if vectors.shape[1] < EMBED_DIM:
            vectors = np.pad(vectors, ((0, 0), (0, EMBED_DIM - vectors.shape[1])))
        return vectors.astype(np.float32)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, EMBED_DIM) float32, L2-normalised embeddings of upright cut-outs on neutral grey."""
        return self.embed_descriptors(self.descriptors(list(images)))

    def save(self, folder: str | Path) -> Path | None:
        """Write the learned projection (if any) as ``embed.npz`` into ``folder``."""
        if self.projection is None:
            return None
        return self.projection.save(Path(folder) / FILENAME)


def embed_turns(embedder: Embedder, image: Image.Image, angles: Sequence[float]) -> np.ndarray:
    """(len(angles), EMBED_DIM) embeddings of ``image`` turned counter-clockwise by each angle, in one batch.

    The rotation search's query side (``mlcore.retrieval.search_turns``): catalogue embeddings are of
    upright cut-outs, so a query whose upright estimate is off is also compared turned by other angles.
    Turning keeps the inscribed disc (the only part ``prepare`` keeps), so nothing of the coin is lost.
    """
    from mlcore.cutout import rotate_upright

    turned = [rotate_upright(image, float(angle)) for angle in angles]
    return embedder.embed(turned) if turned else np.zeros((0, EMBED_DIM), dtype=np.float32)
