"""How fast the catalogue is indexed, how it scales with workers, and whether visitors wait meanwhile.

``python -m bench.indexing --data ../shared/data/ans-roman [--images N] [--workers 1,2] [--broker orm|redis]
[--visitors N] [--out var/bench/indexing.json]``

On a throw-away installation (its own database on the embedded server, folders and models links,
removed at the end; the user's data is never touched):

* ``steps``: the catalogue path step by step, in this process, on ``--images`` dev-set photos:
  decoding, finding the coin (the studio shortcut or the model, and how often each), cutting it out,
  the backbone on batches, and what the whole path gives per image;
* ``workers``: the first index of those images by the ``bulk`` cluster as ``make run`` starts it,
  with 1, 2… worker processes (one torch/ONNX thread each: a worker per core) that share only the
  database, the broker and the media folder; images/s and the speed-up;
* ``visitors``: while the bulk cluster indexes them again from scratch, ``--visitors`` photos are
  submitted one after another to the photos cluster; the time from upload to candidates, p50/p95.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

from bench.stress import child_env, manage, models_source, process_group_stop
from config import embedded_db, redis_server, throwaway_db
from mlcore.modelfiles import link_pretrained

BASE_DIR = Path(__file__).resolve().parent.parent
VISITOR = """
import sys, time
import django
django.setup()
from django.core.files.uploadedfile import SimpleUploadedFile
from identification import services
from identification.models import Submission, SubmissionStatus
latencies = []
for number, path in enumerate(sys.argv[1:]):
    started = time.monotonic()
    upload = SimpleUploadedFile(f"visitor-{number}.jpg", open(path, "rb").read(), content_type="image/jpeg")
    submission = services.submission_create(files=[upload], requester_name="Bench", requester_email="bench@example.org")
    while Submission.objects.get(pk=submission.pk).status in (SubmissionStatus.RECEIVED, SubmissionStatus.PROCESSING):
        time.sleep(0.2)
    latencies.append(time.monotonic() - started)
print(" ".join(f"{value:.3f}" for value in latencies))
"""


def subset_csv(data: Path, images: int, target: Path) -> list[Path]:
    """labels.csv with the first coins whose two photos make ``images`` images; returns their photo paths."""
    with (data / "labels.csv").open(encoding="utf-8", newline="") as source:
        reader = csv.DictReader(source)
        rows = [row for row in reader if row.get("obverse_image") and row.get("reverse_image")][: max(1, images // 2)]
        fields = reader.fieldnames
    with target.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return [data / row[column] for row in rows for column in ("obverse_image", "reverse_image")]


def steps_measure(paths: list[Path], models_dir: Path, batch: int = 16) -> dict:
    """Each step of the catalogue path in this process (one thread), per image."""
    import torch

    from mlcore.cutout import make_cutout
    from mlcore.imageio import decode_image
    from mlcore.pipeline import Pipeline
    from mlcore.segment import studio_detection

    torch.set_num_threads(1)
    os.environ["OBVERSE_ONNX_THREADS"] = "1"
    pipeline = Pipeline(models_dir)
    pipeline.embed_many([make_cutout_warmup()])  # load the backbone before timing
    pipeline.segmenter.ensure_loaded()
    times = {"decode": 0.0, "find": 0.0, "cut_out": 0.0, "embed": 0.0}
    shortcut = 0
    cuts = []
    for path in paths:
        started = time.perf_counter()
        image = decode_image(path.read_bytes())
        times["decode"] += time.perf_counter() - started
        started = time.perf_counter()
        found = studio_detection(image)
        shortcut += found is not None
        found = found or max(pipeline.segmenter.find_objects(image), key=lambda d: d.score)
        times["find"] += time.perf_counter() - started
        started = time.perf_counter()
        cuts.append(make_cutout(image, found).on_neutral)
        times["cut_out"] += time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, len(cuts), batch):
        pipeline.embed_many(cuts[start : start + batch])
    times["embed"] += time.perf_counter() - started
    n = len(paths)
    per_image = {f"{step}_ms": round(1000 * total / n, 1) for step, total in times.items()}
    total = sum(times.values())
    return {
        "images": n,
        **per_image,
        "studio_shortcut_share": round(shortcut / n, 3),
        "images_per_s_one_core": round(n / total, 2),
    }


def make_cutout_warmup():
    from PIL import Image

    return Image.new("RGB", (64, 64), (128, 128, 128))


def _sql(url: str, query: str):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall() if query.lstrip().upper().startswith("SELECT") else conn.execute(query)


def index_with_workers(*, env: dict, database_url: str, workers: int, images: int, log, timeout_s: float) -> dict:
    """Index every catalogue image from scratch with ``workers`` bulk processes; the wall time and rate."""
    _sql(database_url, "DELETE FROM collection_imageembedding")
    _sql(database_url, "UPDATE collection_specimenimage SET cutout = ''")
    worker_env = {**env, "Q_CLUSTER_NAME": "bulk", "OBVERSE_BULK_WORKERS": str(workers)}
    worker_env.update({"OMP_NUM_THREADS": "1", "OBVERSE_ONNX_THREADS": "1"})  # a core per worker process
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=BASE_DIR,
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(15)  # the workers load their models before the work arrives
        started = time.monotonic()
        enqueue = "from identification.jobs import index_catalogue_pending; index_catalogue_pending()"
        subprocess.run([sys.executable, "manage.py", "shell", "-c", enqueue], cwd=BASE_DIR, env=env, check=True)
        while True:
            status = _sql(
                database_url, "SELECT status, done, failed FROM identification_backgroundjob ORDER BY id DESC"
            )
            if status and status[0][0] in ("done", "failed"):
                break
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"indexing with {workers} workers did not finish in {timeout_s} s")
            time.sleep(1)
        seconds = time.monotonic() - started
    finally:
        process_group_stop(worker, signal.SIGINT, 60)
    log(f"indexing: {workers} worker(s), {images} images in {seconds:.1f} s")
    return {"workers": workers, "seconds": round(seconds, 1), "images_per_s": round(images / seconds, 2)}


def visitors_during_index(*, env: dict, database_url: str, photos: list[Path], log) -> dict:
    """Photos submitted one after another while the bulk cluster indexes everything from scratch."""
    _sql(
        database_url,
        "DELETE FROM collection_imageembedding WHERE id NOT IN (SELECT min(id) FROM collection_imageembedding)",
    )
    _sql(database_url, "UPDATE collection_specimenimage SET cutout = ''")
    clusters = [
        subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=BASE_DIR,
            env={**env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for extra in ({}, {"Q_CLUSTER_NAME": "bulk"})
    ]
    try:
        time.sleep(15)
        enqueue = "from identification.jobs import index_catalogue_pending; index_catalogue_pending()"
        subprocess.run([sys.executable, "manage.py", "shell", "-c", enqueue], cwd=BASE_DIR, env=env, check=True)
        out = subprocess.run(
            [sys.executable, "-c", VISITOR, *map(str, photos)],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        running = _sql(database_url, "SELECT status FROM identification_backgroundjob ORDER BY id DESC")[0][0]
    finally:
        for process in clusters:
            process_group_stop(process, signal.SIGINT, 60)
    latencies = [float(value) for value in out.split()]
    log(f"visitors: {len(latencies)} photos during the index, the index {running} when the last was answered")
    return {
        "photos": len(latencies),
        "upload_to_candidates_s_p50": round(float(np.percentile(latencies, 50)), 2),
        "upload_to_candidates_s_p95": round(float(np.percentile(latencies, 95)), 2),
        "index_still_running_at_the_end": running != "done",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--broker", choices=["orm", "redis"], default="redis")
    parser.add_argument("--visitors", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="obverse-indexing-"))
    name = f"obverse_indexing_{os.getpid()}_{secrets.token_hex(3)}"
    broker = None
    result: dict = {"images": args.images, "broker": args.broker, "load_1m_start": round(os.getloadavg()[0], 2)}
    try:
        database_url = embedded_db.start(name)
        link_pretrained(models_source(), work / "models")
        env = child_env(work=work, database_url=database_url, workers=1)
        env["OBVERSE_BROKER"] = args.broker
        if args.broker == "redis":
            port = 20000 + secrets.randbelow(20000)
            env["OBVERSE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            broker = redis_server.start(env["OBVERSE_REDIS_URL"], work / "redis")
        paths = subset_csv(Path(args.data), args.images, work / "labels.csv")
        manage(
            ["migrate", "--noinput"],
            manage_cmd=[sys.executable, "manage.py"],
            env=env,
            log=work / "setup.log",
            timeout_s=600,
        )
        manage(
            ["import_csv", str(work / "labels.csv"), "--images", args.data],
            manage_cmd=[sys.executable, "manage.py"],
            env=env,
            log=work / "setup.log",
            timeout_s=1800,
        )
        result["steps"] = steps_measure(paths, work / "models")
        log(f"steps: {json.dumps(result['steps'])}")
        runs = [
            index_with_workers(
                env=env, database_url=database_url, workers=int(n), images=len(paths), log=log, timeout_s=args.timeout
            )
            for n in args.workers.split(",")
        ]
        result["workers"] = runs
        result["speed_up"] = round(runs[-1]["images_per_s"] / runs[0]["images_per_s"], 2) if len(runs) > 1 else None
        if args.visitors:
            visitors = [paths[i] for i in range(0, len(paths), max(1, len(paths) // args.visitors))][: args.visitors]
            result["visitors"] = visitors_during_index(env=env, database_url=database_url, photos=visitors, log=log)
        result["load_1m_end"] = round(os.getloadavg()[0], 2)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=30)
        throwaway_db.drop(name, embedded_db.database_url("postgres"))
        subprocess.run(["rm", "-rf", str(work)], check=False)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
