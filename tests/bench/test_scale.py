"""bench.scale / bench_scale: a small-N run of the museum-scale benchmark (real server, fake embeddings)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import psycopg
import pytest
from django.core.management import CommandError, call_command

from bench import scale
from config.throwaway_db import server_params

AUTHORITIES = ["Hadrian", "Trajan", "Gaius/Caligula", "Constantine I"]
MATERIALS = ["Bronze", "Silver", "Gold"]


@pytest.fixture(scope="module")
def fake_real() -> scale.RealSet:
    """120 'real' coins in 40 types: non-negative 48-d vectors, coins of a type near each other."""
    rng = np.random.default_rng(0)
    types = np.maximum(rng.normal(0.5, 0.5, size=(40, 2, 48)), 0.0)
    vectors, ids, sides, labels = [], [], [], {}
    for coin in range(120):
        record = f"r{coin}"
        kind = coin % 40
        labels[record] = {
            "authority": AUTHORITIES[kind % len(AUTHORITIES)],
            "material": MATERIALS[kind % len(MATERIALS)],
            "mint": "Rome",
            "denomination": "",
        }
        for side in (0, 1):
            vectors.append(np.maximum(types[kind, side] + rng.normal(0, 0.15, 48), 0.0))
            ids.append(record)
            sides.append(scale.SIDES[side])
    return scale.RealSet(scale._normalise(np.array(vectors, np.float32)), ids, sides, labels)


def test_synthetic_catalogue_has_the_requested_size_with_whole_items(fake_real):
    catalogue = scale.synthetic_catalogue(real=fake_real, n_images=1500, seed=1)

    assert len(catalogue) == 1500 and catalogue.vectors.shape == (1500, 48)
    assert np.allclose(np.linalg.norm(catalogue.vectors, axis=1), 1.0, atol=1e-4)
    assert catalogue.vectors.min() >= 0.0  # ReLU features stay non-negative
    assert 2.0 < catalogue.generator["images_per_item"] < 2.5
    first_item = catalogue.item_ids == catalogue.item_ids[0]
    assert set(catalogue.sides[first_item]) == {0, 1}  # every coin has both sides
    assert set(catalogue.item_labels) == {int(i) for i in catalogue.item_ids}
    assert {labels["authority"] for labels in catalogue.item_labels.values()} == set(AUTHORITIES)


def test_noise_is_scaled_to_the_real_nearest_neighbour_distance(fake_real):
    rng = np.random.default_rng(2)
    obverse = fake_real.vectors[0::2]
    noise = scale.noise_model_fit(obverse, components=16)
    sigma = scale._sigma_for_distance(obverse, noise, 0.05, rng)

    moved = scale._normalise(np.maximum(obverse + noise.sample(rng, len(obverse), sigma), 0.0))
    distance = np.median(1.0 - (moved * obverse).sum(axis=1))
    assert 0.03 < distance < 0.07


def test_top_items_scores_an_item_by_its_best_image():
    rows = [(1, 10, 0.9), (2, 11, 0.95), (3, 10, 0.99), (4, 12, 0.5)]

    assert scale.top_items(rows, k=2) == [10, 11]


def test_exact_neighbours_respect_the_mask(fake_real):
    catalogue = scale.synthetic_catalogue(real=fake_real, n_images=300, seed=3)
    query = catalogue.vectors[5]
    mask = catalogue.sides == catalogue.sides[5]

    rows = scale.exact_neighbours(catalogue=catalogue, sims=catalogue.vectors @ query, mask=mask, limit=10)

    assert rows[0][0] == catalogue.image_ids[5] and rows[0][2] == pytest.approx(1.0, abs=1e-5)
    assert all(catalogue.sides[image_id - 1] == catalogue.sides[5] for image_id, _, _ in rows)
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)


def test_selective_filter_is_one_rulers_gold(fake_real):
    catalogue = scale.synthetic_catalogue(real=fake_real, n_images=2000, seed=4)

    filters = scale.selective_filter_pick(catalogue=catalogue)
    items = scale.filter_items(catalogue, filters)

    assert filters["material"] == "Gold" and filters["authority"] in AUTHORITIES
    assert 0 < len(items) < len(catalogue.item_labels) / 4


def test_a_small_run_measures_every_storage_and_drops_its_database(fake_real, tmp_path):
    out, plot = tmp_path / "scale.json", tmp_path / "scale.png"
    options = scale.BenchOptions(
        sizes=[3000], storages=["vector", "halfvec", "pca16"], queries=12, ef_search=[40, 200], warmup=3
    )

    report = scale.bench_run(
        real=fake_real, conninfo=server_params(), options=options, out_path=out, log=lambda m: None
    )

    assert json.loads(out.read_text()) == report
    (run,) = report["runs"]
    assert run["n_images"] == 3000 and run["filter"]["images"] > 0
    assert [s["storage"] for s in run["storages"]] == ["vector", "halfvec", "pca16"]
    for storage in run["storages"]:
        assert storage["index"]["build_s"] > 0 and storage["index"]["index_mb"] > 0
        assert storage["index"]["m"] == 16 and storage["index"]["ef_construction"] == 64
        assert storage["memory"]["server_rss_mb"] > 0
        assert len(storage["search"]) == 4  # 2 ef_search values x (unfiltered, filtered)
        for entry in storage["search"]:
            assert 0 < entry["p50_ms"] <= entry["p95_ms"]
            assert 0 < entry["labels_p50_ms"] <= entry["labels_p95_ms"]
            if entry["filter"] == "none":  # the items of several searches, as one photo's turns read
                assert entry["labels_items_p50"] > scale.NEIGHBOUR_IMAGES
            assert 0.0 <= entry["recall_at_8"] <= 1.0
    by_storage = {s["storage"]: s for s in run["storages"]}
    # Full precision exact search agrees with the float32 truth; HNSW at ef_search=200 nearly so.
    assert by_storage["vector"]["exact_sql_recall_vs_float32"] == 1.0
    best = [e for e in by_storage["vector"]["search"] if e["ef_search"] == 200 and e["filter"] == "none"][0]
    assert best["recall_at_8"] >= 0.9
    with psycopg.connect(**server_params(), dbname="postgres") as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [run["database"]]).fetchone()[0]
    assert left == 0
    if importlib.util.find_spec("matplotlib"):  # the plot is optional where matplotlib is missing
        scale.plot_write(report, plot)
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_rejects_an_unknown_storage():
    with pytest.raises(CommandError, match="unknown storage"):
        call_command("bench_scale", storage="float8", sizes="1000")
