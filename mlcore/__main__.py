"""``python -m mlcore process PHOTO --out DIR``: run the pipeline on one photo and keep every intermediate.

Writes ``detections.jpg`` (all objects found, the chosen one in green), ``mask.png``, ``crop.jpg``,
``cutout.png``, ``on_neutral.jpg``, ``upright.jpg``, ``enhanced.jpg`` (when enhancement ran) and
``result.json`` (side, angle, detections, timings, model versions): what a curator looks at to see
why an identification went wrong. Exit status 2 for an unusable photo or when no coin is found.

With ``--catalogue DIR`` (a folder in the ans-roman layout) the photo is also identified against
it, in memory, as the platform ranks candidates (``mlcore.lookup``): ``result.json`` then holds the
predicted metadata and the 8 best types, and ``candidates.jpg`` shows each beside the photo at the
turn that matched. ``--index FILE`` keeps the catalogue's vectors between runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import ImageDraw


def process_command(args: argparse.Namespace) -> int:
    from mlcore.imageio import ImageDecodeError, decode_image, encode_jpeg, encode_png
    from mlcore.pipeline import NoObjectFound, Pipeline

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(args.models_dir, use_enhance=args.enhance)
    catalogue = None
    if args.catalogue is not None:
        catalogue = _catalogue(pipeline, args)
        if catalogue is None:
            return 2
    try:
        image = decode_image(args.photo)
        result = pipeline.process(
            image,
            known_side=args.side,
            assume_upright=args.upright,
            on_step=lambda s: print(f"… {s}"),
            choose=args.object,
        )
    except (ImageDecodeError, NoObjectFound) as exc:
        (out / "result.json").write_text(json.dumps({"photo": str(args.photo), "error": str(exc)}, indent=2))
        print(f"error: {exc}", file=sys.stderr)
        return 2

    overview = image.convert("RGB")
    draw = ImageDraw.Draw(overview)
    width = max(2, max(overview.size) // 300)
    for index, detection in enumerate(result.detections):
        colour = (0, 200, 0) if index == result.chosen else (230, 40, 40)
        draw.rectangle(detection["box"], outline=colour, width=width)
    files = {
        "detections.jpg": encode_jpeg(overview),
        "mask.png": encode_png(result.mask) if result.mask is not None else None,
        "crop.jpg": encode_jpeg(image.convert("RGB").crop(result.crop_box)),
        "cutout.png": encode_png(result.cutout),
        "on_neutral.jpg": encode_jpeg(result.on_neutral) if result.on_neutral is not None else None,
        "upright.jpg": encode_jpeg(result.before_enhance or result.upright),
        "enhanced.jpg": encode_jpeg(result.upright) if result.enhanced else None,
    }
    for name, data in files.items():
        if data is not None:
            (out / name).write_bytes(data)
    summary = {
        "photo": str(args.photo),
        "original_size": list(result.original_size),
        "detections": result.detections,
        "chosen": result.chosen,
        "crop_box": list(result.crop_box),
        "angle": round(result.angle, 2),
        "angle_confidence": round(result.angle_confidence, 4),
        "enhanced": result.enhanced,
        "side": result.side,
        "side_confidence": round(result.side_confidence, 4),
        "embedding_norm": round(float((result.embedding**2).sum() ** 0.5), 4),
        "embedding_dim": int(result.embedding.shape[0]),
        "timings_ms": result.timings,
        "model_versions": result.model_versions,
        "files": sorted(name for name, data in files.items() if data is not None),
    }
    shown = ["side", "side_confidence", "angle", "timings_ms"]
    if catalogue is not None:
        from mlcore.lookup import identify

        summary.update(identify(pipeline, result, catalogue, exclude=args.exclude_record))
        sheet = _candidate_sheet(result, summary["candidates"])
        if sheet is not None:
            (out / "candidates.jpg").write_bytes(encode_jpeg(sheet))
            summary["files"] = sorted([*summary["files"], "candidates.jpg"])
        shown += ["metadata", "candidates"]
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in shown}, indent=2))
    return 0


def _catalogue(pipeline, args: argparse.Namespace):
    """The ``--catalogue`` folder embedded (or read from ``--index``); None, with a message, when unusable."""
    from mlcore.dataset import load_ans_layout
    from mlcore.lookup import build_catalogue

    labels = Path(args.catalogue) / "labels.csv"
    if not labels.is_file():
        print(f"error: {labels} not found: --catalogue takes a folder in the ans-roman layout", file=sys.stderr)
        return None
    records = load_ans_layout(args.catalogue, limit=args.catalogue_limit)
    if not any(r.images for r in records):
        print(f"error: no catalogue photos found under {args.catalogue}", file=sys.stderr)
        return None

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"… catalogue {done}/{total} photos", file=sys.stderr)

    return build_catalogue(pipeline, records, cache=args.index, on_progress=progress)


def _candidate_sheet(result, candidates: list[dict], size: int = 160):
    """One row per candidate: the photo's cut-out at the turn that matched, then the catalogue photo."""
    from PIL import Image

    from mlcore.cutout import rotate_upright
    from mlcore.pipeline import on_neutral_of

    if not candidates:
        return None
    query = on_neutral_of(result.cutout)
    sheet = Image.new("RGB", (2 * size, size * len(candidates)), (255, 255, 255))
    for row, candidate in enumerate(candidates):
        turned = rotate_upright(query, candidate["angle"]).resize((size, size))
        sheet.paste(turned, (0, row * size))
        with Image.open(candidate["photo"]) as photo:
            photo = photo.convert("RGB")
            photo.thumbnail((size, size))
            sheet.paste(photo, (size + (size - photo.width) // 2, row * size + (size - photo.height) // 2))
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlcore", description="Obverse's ML core, for curators.")
    commands = parser.add_subparsers(dest="command", required=True)
    process = commands.add_parser("process", help="Run the pipeline on one photo and write every intermediate.")
    process.add_argument("photo", type=Path)
    process.add_argument("--out", type=Path, required=True)
    process.add_argument("--models-dir", default=None)
    process.add_argument("--side", choices=("obverse", "reverse"), help="The side, when known (skips classifying).")
    process.add_argument("--upright", action="store_true", help="The photo is upright (skips turning).")
    process.add_argument("--enhance", action="store_true", help="Enhance small photos (off by default).")
    process.add_argument(
        "--object", type=int, help="Which object found is the coin (0: first in result.json; default: likeliest)."
    )
    process.add_argument("--catalogue", type=Path, help="Identify against this folder (ans-roman layout).")
    process.add_argument("--catalogue-limit", type=int, help="Only the first N records of --catalogue.")
    process.add_argument("--index", type=Path, help="Cache of the catalogue's vectors (.npz), reused when current.")
    process.add_argument(
        "--exclude-record", action="append", default=[], help="Leave this record out of the catalogue (repeatable)."
    )
    args = parser.parse_args(argv)
    if args.command == "process":
        return process_command(args)
    return 1  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
