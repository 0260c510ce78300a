"""Compare embedding recipes (backbone weights, input size, softening) on the backbone split's types.

``python -m bench.embedding_recipes --data ../shared/data/ans-roman --types val --recipe NAME=key:value,... [--out F]``

The retrieval alone, in memory, for choosing a recipe without the whole platform: every catalogue
photo of the dev set is the gallery (cut out as the platform cuts catalogue photos); queries are the
photos of coins of the chosen types (``val`` to choose, ``test`` to report: never choose on
``test``) whose type has another specimen, made poor and good (``mlcore.degrade``), cut out with
their known mask, turned by the rotation search's eight turns from an unknown start, and ranked by
``mlcore.retrieval.rank_items`` on their true side (the side classifier is measured elsewhere), with
their own specimen left out. Single photos and pairs; figures beside their ceilings (``bench.figures``).

A recipe is ``name=field:value,…`` over ``mlcore.embed.EmbedConfig`` fields, e.g.
``coins=backbone:coins,input_size:224,lowpass:0,soften:0`` (``today`` = the default recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.figures import QueryRow, identification_figures
from mlcore.cutout import catalogue_cutout, cutout_with_mask, rotate_upright
from mlcore.dataset import hash_unit, load_ans_layout, type_key
from mlcore.degrade import degrade_with_truth
from mlcore.embed import DEFAULT_CONFIG, EmbedConfig, Embedder
from mlcore.retrieval import NEIGHBOUR_IMAGES, InMemoryIndex, QueryPhoto, rank_items
from mlcore.train_backbone import Split

TURNS = 8


def parse_recipe(text: str) -> tuple[str, EmbedConfig]:
    name, _, spec = text.partition("=")
    if name == "today" and not spec:
        return name, DEFAULT_CONFIG
    types = {f.name: f.type for f in fields(EmbedConfig)}
    values = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition(":")
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes"), "str": str}[types[key]]
        values[key] = kind(value)
    return name, replace(DEFAULT_CONFIG, **values)


def make_queries(records, types: set[str], regimes: list[str], seed: int, limit: int | None = None) -> list[dict]:
    """Degraded photos with their known mask, cut out, and the turn that would make them upright."""
    counts: dict[str, int] = {}
    for record in records:
        counts[type_key(record)] = counts.get(type_key(record), 0) + 1
    chosen = [r for r in records if type_key(r) in types and counts[type_key(r)] > 1 and len(r.images) == 2]
    chosen = chosen[:limit] if limit else chosen
    out = []
    for regime in regimes:
        for record in chosen:
            photos = {}
            for side, path in sorted(record.images.items()):
                rng = np.random.default_rng(int(hash_unit(seed, regime, record.record_id, side) * 2**32))
                with Image.open(path) as raw:
                    photo = degrade_with_truth(raw.convert("RGB"), rng, regime=regime)
                start = -photo.angle + float(rng.uniform(0, 360 / TURNS))  # the search starts off upright
                photos[side] = (cutout_with_mask(photo.image, photo.mask), start)
            out.append({"record": record, "regime": regime, "photos": photos})
    return out


def measure(records, queries, config: EmbedConfig, models_dir: Path, say) -> dict:
    embedder = Embedder(models_dir, config=config, use_trained=False)
    index = InMemoryIndex()
    started = time.monotonic()
    for start in range(0, len(records), 64):
        chunk = [(r, side, path) for r in records[start : start + 64] for side, path in sorted(r.images.items())]
        cutouts = []
        for _, _, path in chunk:
            with Image.open(path) as raw:
                cutouts.append(catalogue_cutout(raw))
        index.add(
            [f"{r.record_id}:{side}" for r, side, _ in chunk],
            embedder.embed(cutouts),
            [type_key(r) for r, _, _ in chunk],
            [side for _, side, _ in chunk],
        )
    say(f"gallery: {len(index)} images in {time.monotonic() - started:.0f} s")
    offsets = np.arange(TURNS) * (360.0 / TURNS)
    rows = []
    for query in queries:
        record = query["record"]
        own = {f"{record.record_id}:{side}" for side in ("obverse", "reverse")}
        photos = {}
        for position, (side, (cutout, start)) in enumerate(sorted(query["photos"].items())):
            angles = (start + offsets) % 360.0
            vectors = embedder.embed([rotate_upright(cutout, float(a)) for a in angles])
            photos[side] = QueryPhoto(position, side, vectors, list(angles))

        def search(vector, side, own=own):
            return index.search(vector, NEIGHBOUR_IMAGES, side, exclude=own)

        for sides in (("obverse",), ("reverse",), ("obverse", "reverse")):
            ranked = rank_items([photos[s] for s in sides], search, lambda items: {})
            rows.append(QueryRow(record, sides, [item.item_id for item in ranked], list(sides), query["regime"]))
    return identification_figures(rows, records)


def main(argv: list[str] | None = None) -> int:
    from mlcore.modelfiles import models_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--types", choices=["val", "test"], default="val")
    parser.add_argument("--recipe", action="append", required=True, help="name=field:value,… (or 'today')")
    parser.add_argument("--regime", choices=["good", "poor", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="at most this many query coins")
    parser.add_argument(
        "--catalogue-limit", type=int, help="gallery: the query coins and this many others (quick runs)"
    )
    parser.add_argument("--models-dir")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    records = [r for r in load_ans_layout(args.data) if r.images]
    split = Split.of(records)
    regimes = ["poor", "good"] if args.regime == "both" else [args.regime]
    queries = make_queries(records, getattr(split, args.types), regimes, args.seed, args.limit)
    if args.catalogue_limit:
        queried = {q["record"].record_id for q in queries}
        records = [r for r in records if r.record_id in queried] + [r for r in records if r.record_id not in queried][
            : args.catalogue_limit
        ]
    say(f"{len(queries)} query coins ({args.types} types, {', '.join(regimes)}), {len(records)} gallery coins")
    result = {"types": args.types, "seed": args.seed, "recipes": {}}
    for text in args.recipe:
        name, config = parse_recipe(text)
        say(f"recipe {name}: {config.tag()}")
        started = time.monotonic()
        result["recipes"][name] = {
            "tag": config.tag(),
            **measure(records, queries, config, models_dir(args.models_dir), say),
            "seconds": round(time.monotonic() - started, 1),
        }
        say(json.dumps({name: result["recipes"][name]["all"]}))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
