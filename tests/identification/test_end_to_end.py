"""The real path, without fakes: mlcore's pipeline + PostgreSQL + pgvector, on real coins.

Skips with a message when the real data or the models folder is missing.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from PIL import Image

from identification import indexing, pipeline_cache, services
from identification.models import SubmissionStatus
from identification.pipeline_cache import reset_pipeline
from mlcore.modelfiles import ModelFileError, check_file

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db, pytest.mark.data]


@pytest.fixture(autouse=True)
def real_models(settings):
    try:
        check_file(Path(settings.OBVERSE_MODELS_DIR), "u2netp")
    except ModelFileError as exc:
        pytest.skip(f"models folder not prepared: {exc}")
    reset_pipeline()
    yield
    reset_pipeline()


def _submit(data: bytes, name: str = "photo.jpg"):
    upload = SimpleUploadedFile(name, data, content_type="image/jpeg")
    submission = services.submission_create(files=[upload], requester_name="Ada", requester_email="a@example.org")
    services.submission_process(submission_id=submission.pk)
    submission.refresh_from_db()
    return submission


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class TestBadInput:
    def test_bytes_that_are_not_an_image_are_refused_at_upload(self):
        with pytest.raises(ValidationError, match="not an image"):
            _submit(b"\x00\x13garbage" * 64, "photo.jpg")

    def test_a_pdf_named_jpg_is_refused_by_what_it_is(self):
        with pytest.raises(ValidationError, match="PDF"):
            _submit(b"%PDF-1.4 this is not a photo", "notes.jpg")

    def test_a_truncated_jpeg_fails_with_the_reason(self, ans_dir):
        data = (ans_dir / "images").glob("*.obv.jpg").__next__().read_bytes()
        submission = _submit(data[: len(data) // 3])
        assert submission.status == SubmissionStatus.FAILED and submission.error

    def test_a_photo_with_no_coin_fails_with_the_reason(self):
        submission = _submit(_jpeg(Image.new("RGB", (400, 300), (235, 235, 235))))
        assert submission.status == SubmissionStatus.FAILED
        assert "coin" in submission.error.lower()


class TestRealCoin:
    def test_a_turned_photo_of_a_catalogued_coin_is_processed_and_its_type_is_a_candidate(self, ans_dir, tmp_path):
        from collection.importers.tabular import import_csv_file
        from collection.models import Specimen, SpecimenImage

        import_csv_file(_head(ans_dir / "labels.csv", 8, tmp_path / "head.csv"), images_dir=ans_dir)
        pipeline = pipeline_cache.get_pipeline()
        for image_id in SpecimenImage.objects.values_list("pk", flat=True):
            assert indexing.catalogue_image_index(image_id=image_id, pipeline=pipeline)
        specimen = Specimen.objects.filter(item__isnull=False).order_by("record_id").first()
        photo = Image.open(ans_dir / "images" / f"{specimen.record_id}.obv.jpg").rotate(25, fillcolor="white")
        submission = _submit(_jpeg(photo))
        assert submission.status == SubmissionStatus.AWAITING_REVIEW, submission.error
        image = submission.images.get()
        assert image.cutout and image.original and image.side in {"obverse", "reverse", "unknown"}
        item_ids = list(submission.candidates.order_by("rank").values_list("item_id", flat=True))
        assert 1 <= len(item_ids) <= 8 and len(set(item_ids)) == len(item_ids)
        # Its own catalogue photo is in the index: among 8 coins it must be near the top, not anywhere.
        assert specimen.item_id in item_ids[:2], (specimen.item_id, item_ids)


def _head(path: Path, rows: int, target: Path) -> Path:
    """labels.csv limited to the rows whose record is the first ``rows`` images on disk (sorted)."""
    import csv

    target.parent.mkdir(parents=True, exist_ok=True)
    images = sorted(p.name.split(".obv")[0] for p in (path.parent / "images").glob("*.obv.jpg"))[:rows]
    with path.open(encoding="utf-8", newline="") as source, target.open("w", encoding="utf-8", newline="") as out:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["record_id"] in images)
    return target


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_identification_benchmark_runs_on_a_small_real_subset(ans_dir, tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "manage.py", "benchmark_identification", "--catalogue", str(ans_dir)]
    cmd += ["--catalogue-limit", "12", "--limit", "1", "--seed", "1", "--out", str(out)]
    cmd += ["--query-types", "all", "--regime", "poor", "--no-reindex"]  # 12 coins: few held-out types
    env = {**os.environ, "OBVERSE_INDEX_ON_IMPORT": "0"}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["queries"] >= 1 and result["pair_queries"] >= 1
    keys = ("recall_at_1", "recall_at_8", "recall_at_1_pair", "recall_at_8_pair", "side_accuracy_single")
    for key in (*keys, "side_accuracy_pair"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["recall_at_1"] <= result["recall_at_8"]
    assert result["recall_at_1_pair"] <= result["recall_at_8_pair"]
    assert result["latency_ms_p50"] > 0 and result["index_build_s"] > 0 and result["train_s"] > 0
    assert result["reindex_s"] is None and result["query_types"] == "all"
    for kind in ("single", "pair"):  # every recall stands beside its ceiling
        assert 0.0 < result["ceiling"][kind]["recall_at_1"] <= result["ceiling"][kind]["recall_at_8"] <= 1.0
    assert 0.0 <= result["design_recall_at_1"] <= 1.0 and result["regimes"] == {}
    assert result["catalogue_images"] > 0 and "embedding" in result["model_versions"]
    assert set(result["metadata_calibration"]) == set(result["metadata_accuracy"]) >= {"material"}
    assert set(result["metadata_calibration"]["material"]["accuracy_at_coverage"]) == {"50%", "80%", "100%"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_benchmark_answers_the_photos_of_a_queries_csv(ans_dir, tmp_path):
    from mlcore.dataset import load_ans_layout

    records = load_ans_layout(ans_dir, limit=6)
    folder = tmp_path / "queries"
    folder.mkdir()
    # "Phone photos" of catalogue coins: one reverse alone (poor), and both sides of another as a pair (good).
    Image.open(records[2].images["reverse"]).rotate(90).save(folder / "q1.jpg")
    Image.open(records[3].images["obverse"]).rotate(10).save(folder / "q2o.jpg")
    Image.open(records[3].images["reverse"]).rotate(-10).save(folder / "q2r.jpg")
    (folder / "queries.csv").write_text(
        "image,record_id,side,pair,regime\n"
        f"q1.jpg,{records[2].record_id},reverse,,poor\n"
        f"q2o.jpg,{records[3].record_id},obverse,p2,good\n"
        f"q2r.jpg,{records[3].record_id},reverse,p2,good\n"
    )
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "manage.py", "benchmark_identification", "--catalogue", str(ans_dir), "--no-train"]
    cmd += ["--catalogue-limit", "6", "--queries", str(folder / "queries.csv"), "--out", str(out), "--no-reindex"]
    env = {**os.environ, "OBVERSE_INDEX_ON_IMPORT": "0"}
    details = tmp_path / "details.jsonl"
    subprocess.run([*cmd, "--details", str(details)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["queries"] == 1 and result["pair_queries"] == 1 and result["train_s"] is None
    assert 0.0 <= result["recall_at_1"] <= result["recall_at_8"] <= 1.0
    # Figures per regime: the single photo is the poor one, the pair the good one.
    assert (result["regimes"]["poor"]["queries"], result["regimes"]["poor"]["pair_queries"]) == (1, 0)
    assert (result["regimes"]["good"]["queries"], result["regimes"]["good"]["pair_queries"]) == (0, 1)
    assert set(result["ceiling"]) == {"reverse", "single", "pair"}
    # --details: the query's truth, its images and what it was answered, to look at the failures.
    single, pair = [json.loads(line) for line in details.read_text().splitlines()]
    assert pair["images"] == ["q2o.jpg", "q2r.jpg"] and pair["regime"] == "good" and pair["photos"] == 2
    row = single
    assert row["images"] == ["q1.jpg"] and row["regime"] == "poor"
    assert row["record_id"] == records[2].record_id and row["type_id"] == records[2].type_id
    assert row["sides"][0]["true"] == "reverse" and 1 <= len(row["candidates"]) <= 8
    assert row["rank"] == (row["candidates"].index(row["type_id"]) + 1 if row["type_id"] in row["candidates"] else None)
    assert (row["rank"] == 1) == (result["recall_at_1"] == 1.0)
    assert result["misses"]["missed_at_1"] == (0 if row["rank"] == 1 else 1)
    # A row naming a coin outside the catalogue is a mistake in the CSV, not a miss.
    (folder / "queries.csv").write_text("image,record_id\nq1.jpg,no.such.record\n")
    failed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0 and "not in the catalogue: no.such.record" in failed.stderr


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_benchmark_stopped_with_sigterm_leaves_no_temporary_folder(ans_dir, tmp_path):
    import time

    temp = tmp_path / "tmp"
    temp.mkdir()
    cmd = [sys.executable, "manage.py", "benchmark_identification", "--catalogue", str(ans_dir)]
    cmd += ["--catalogue-limit", "24", "--limit", "1", "--seed", "1"]
    env = {**os.environ, "OBVERSE_INDEX_ON_IMPORT": "0", "TMPDIR": str(temp)}
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob("obverse-benchmark-*/models")) and time.monotonic() < deadline:
            assert process.poll() is None, "the benchmark ended before it could be stopped"
            time.sleep(0.2)
        assert list(temp.glob("obverse-benchmark-*")), "the benchmark never made its temporary folder"
        time.sleep(1.0)  # well inside the run: importing, training or indexing
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) != 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not list(temp.glob("obverse-benchmark-*"))
    with connection.cursor() as cursor:  # nor its throw-away database (it was left when stopped mid-creation)
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [f"obverse_benchmark_{process.pid}"])
        assert cursor.fetchall() == []
