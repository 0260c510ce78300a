"""Search at museum scale: synthetic catalogues in a throw-away pgvector database, measured.

``manage.py bench_scale`` drives this module. For each catalogue size N it

1. generates N catalogue image embeddings around real MobileNetV2 embeddings of the ans-roman
   coins (``synthetic_catalogue``: each synthetic coin is a real coin of the same type moved by
   noise drawn from the real embeddings' own covariance; each of its photographs is moved again,
   less), with the parent coin's authority, material, mint and denomination as metadata;
2. loads them into a database created for the run (binary ``COPY``), one table per storage
   (``vector(d)``, ``halfvec(d)``, or a PCA-reduced ``vector(k)``), with the same columns, filters
   and index settings as ``collection.ImageEmbedding``;
3. builds the HNSW index (timed, sized) and runs the application's query — the 80 nearest images
   grouped into the top-8 items, filters joined through item concepts, ``hnsw.iterative_scan`` —
   at several ``hnsw.ef_search`` values, unfiltered and with a selective filter (one ruler's gold
   coins), against exact neighbours computed in full float32 precision; and the labels query that
   follows it for the metadata agreement (``LABELS_SQL``).

Nothing here touches the application's own tables: the database is created and dropped by the run.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from collection.models import KEY_KINDS
from config import throwaway_db
from identification.search import CANDIDATES
from mlcore.retrieval import NEIGHBOUR_IMAGES, QueryPhoto, rank_items

SIDES = ("obverse", "reverse")
MODEL_NAME, MODEL_VERSION = "mobilenetv2-imagenet", "bench-1"
TOP_ITEMS = CANDIDATES
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64  # collection.ImageEmbedding's index
STORAGE_KINDS = ("vector", "halfvec")  # plus "pca<k>", e.g. pca384


# --------------------------------------------------------------------------- real embeddings


@dataclass
class RealSet:
    """Real catalogue embeddings (L2-normalised rows) with the side and labels of each image."""

    vectors: np.ndarray
    record_ids: list[str]
    sides: list[str]
    labels: dict[str, dict[str, str]]  # record_id -> {authority, material, mint, denomination}

    def __len__(self) -> int:
        return len(self.record_ids)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def labels_read(data_dir: Path) -> dict[str, dict[str, str]]:
    """record_id -> the filterable labels of labels.csv (empty strings where unknown)."""
    with open(Path(data_dir) / "labels.csv", newline="", encoding="utf-8") as handle:
        return {
            row["record_id"]: {kind: row.get(kind, "") or "" for kind in KEY_KINDS} for row in csv.DictReader(handle)
        }


def real_embeddings_load(
    *, data_dir: Path, cache_path: Path, models_dir: Path, limit: int | None = None, log: Callable = print
) -> RealSet:
    """MobileNetV2 embeddings of the ans-roman images, computed once and cached (npz) at cache_path.

    ``limit`` caps the number of coins embedded (tests); a partial cache from an interrupted run
    (``<cache>.partial.npz``) is used as it is when the full one is missing.
    """
    data_dir, cache_path = Path(data_dir), Path(cache_path)
    labels = labels_read(data_dir)
    for candidate in (cache_path, cache_path.with_suffix(".partial.npz")):
        if limit is None and candidate.exists():
            data = np.load(candidate)
            ids = [str(r) for r in data["record_ids"]]
            log(f"real embeddings: {len(ids)} images from {candidate}")
            return RealSet(_normalise(data["vectors"]), ids, [str(s) for s in data["sides"]], labels)
    from PIL import Image

    from mlcore.backbone import Backbone

    paths, ids, sides = [], [], []
    for record_id in list(labels)[:limit]:
        for side, suffix in (("obverse", "obv"), ("reverse", "rev")):
            path = data_dir / "images" / f"{record_id}.{suffix}.jpg"
            if path.exists():
                paths.append(path)
                ids.append(record_id)
                sides.append(side)
    backbone = Backbone(Path(models_dir), batch_size=16)
    chunks = []
    for start in range(0, len(paths), 64):
        with_images = [Image.open(p).convert("RGB") for p in paths[start : start + 64]]
        chunks.append(backbone.features(with_images))
        log(f"embedded {start + len(with_images)}/{len(paths)} real images")
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, 1280), np.float32)
    if limit is None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_path, vectors=vectors, record_ids=np.array(ids), sides=np.array(sides))
    return RealSet(_normalise(vectors), ids, sides, labels)


# --------------------------------------------------------------------------- synthetic catalogue


@dataclass
class Catalogue:
    """N synthetic catalogue images: vectors (float32, unit rows) and per-image/per-item metadata."""

    vectors: np.ndarray
    image_ids: np.ndarray  # 1..N
    item_ids: np.ndarray
    sides: np.ndarray  # 0 obverse, 1 reverse
    item_labels: dict[int, dict[str, str]]
    generator: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)  # side index -> NoiseModel

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class NoiseModel:
    """Gaussian noise shaped like the real embeddings' spread (PCA basis + isotropic residual)."""

    components: np.ndarray  # (k, d)
    scales: np.ndarray  # (k,) standard deviations along the components
    residual: float  # standard deviation per dimension outside the components

    def sample(self, rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
        z = rng.standard_normal((n, len(self.scales)), dtype=np.float32) * self.scales
        noise = z @ self.components
        noise += rng.standard_normal((n, self.components.shape[1]), dtype=np.float32) * self.residual
        return (sigma * noise).astype(np.float32)


def noise_model_fit(vectors: np.ndarray, *, components: int = 64) -> NoiseModel:
    """Principal directions of the real embeddings, so synthetic variation looks like real variation."""
    centred = vectors - vectors.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(components, len(s))
    var = (s**2) / max(len(vectors) - 1, 1)
    residual = float(np.sqrt(var[k:].sum() / vectors.shape[1])) if len(var) > k else 0.0
    return NoiseModel(vt[:k].astype(np.float32), np.sqrt(var[:k]).astype(np.float32), residual)


def _nearest_other_distance(vectors: np.ndarray) -> np.ndarray:
    """Cosine distance from each unit row to its nearest other row."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1.0)
    return 1.0 - sims.max(axis=1)


def _sigma_for_distance(base: np.ndarray, noise: NoiseModel, target: float, rng: np.random.Generator) -> float:
    """The noise scale whose median cosine distance from the base vectors is ``target`` (bisection)."""
    low, high = 0.0, 8.0
    sample = base[rng.choice(len(base), size=min(len(base), 200), replace=False)]
    for _ in range(16):
        mid = (low + high) / 2
        moved = _normalise(np.maximum(sample + noise.sample(rng, len(sample), mid), 0.0))
        distance = float(np.median(1.0 - (moved * sample).sum(axis=1)))
        low, high = (mid, high) if distance < target else (low, mid)
    return (low + high) / 2


def synthetic_catalogue(
    *, real: RealSet, n_images: int, seed: int = 7, extra_photo_rate: float = 0.25, photo_share: float = 0.35
) -> Catalogue:
    """N catalogue images whose neighbourhoods resemble the real ones.

    A synthetic coin copies the labels of a real parent coin (so label frequencies and their
    combinations are the collection's) and gets, per side, the parent's vector moved by noise
    with the real embeddings' covariance, scaled so that the median distance to the parent equals
    the median distance between a real coin and its nearest real neighbour on that side (a new
    specimen of a known type is about as far from it as the closest other coin). Every coin has
    an obverse and a reverse photograph; ``extra_photo_rate`` of them a second photograph of one
    side, moved from the coin's vector by ``photo_share`` of that distance (relighting, angle).
    Features are ReLU outputs, so vectors are clipped at zero before normalising.
    """
    rng = np.random.default_rng(seed)
    sides_arr = np.array([SIDES.index(s) for s in real.sides])
    per_side = {}
    for side_index, _ in enumerate(SIDES):
        rows = np.flatnonzero(sides_arr == side_index)
        vectors = real.vectors[rows]
        noise = noise_model_fit(vectors)
        target = float(np.median(_nearest_other_distance(vectors))) if len(vectors) > 1 else 0.1
        sigma = _sigma_for_distance(vectors, noise, target, rng)
        photo_sigma = _sigma_for_distance(vectors, noise, target * photo_share, rng)
        by_record = {real.record_ids[r]: r for r in rows}
        per_side[side_index] = (by_record, noise, sigma, photo_sigma, target)
    parents = sorted(set(per_side[0][0]) & set(per_side[1][0]))
    dims = real.vectors.shape[1]

    vectors = np.empty((n_images, dims), np.float32)
    item_ids = np.empty(n_images, np.int64)
    sides = np.empty(n_images, np.int8)
    item_labels: dict[int, dict[str, str]] = {}
    filled, items = 0, 0
    while filled < n_images:
        # About 2 + extra_photo_rate images per coin: size the batch to what is still missing.
        batch = max(16, min(4096, int((n_images - filled) / (2 + extra_photo_rate)) + 16))
        chosen = rng.choice(len(parents), size=batch)
        extra = rng.random(batch) < extra_photo_rate
        extra_side = rng.integers(0, 2, size=batch)
        first, second = [], []
        for side_index in (0, 1):
            by_record, noise, sigma, photo_sigma, _ = per_side[side_index]
            base = real.vectors[[by_record[parents[c]] for c in chosen]]
            coin = np.maximum(base + noise.sample(rng, batch, sigma), 0.0)
            first.append(_normalise(np.maximum(coin + noise.sample(rng, batch, photo_sigma), 0.0)))
            # Only coins with a second photograph of this side need one (noise is the costly part).
            later = np.zeros_like(coin)
            wanted = np.flatnonzero(extra & (extra_side == side_index))
            later[wanted] = _normalise(np.maximum(coin[wanted] + noise.sample(rng, len(wanted), photo_sigma), 0.0))
            second.append(later)
        # Rows coin by coin: obverse, reverse, then the optional second photograph of one side.
        block = np.stack([first[0], first[1], np.where(extra_side[:, None] == 0, second[0], second[1])], axis=1)
        block_sides = np.stack([np.zeros(batch, np.int8), np.ones(batch, np.int8), extra_side.astype(np.int8)], axis=1)
        block_items = np.repeat(np.arange(items + 1, items + batch + 1, dtype=np.int64)[:, None], 3, axis=1)
        keep = np.ones((batch, 3), bool)
        keep[:, 2] = extra
        take = min(int(keep.sum()), n_images - filled)
        vectors[filled : filled + take] = block[keep][:take]
        sides[filled : filled + take] = block_sides[keep][:take]
        item_ids[filled : filled + take] = block_items[keep][:take]
        for offset, c in enumerate(chosen):
            item_labels[items + offset + 1] = real.labels.get(parents[c], {})
        filled += take
        items = int(item_ids[filled - 1])
    item_labels = {i: item_labels[i] for i in range(1, items + 1)}
    generator = {
        "method": "real parent + PCA-shaped Gaussian noise",
        "real_images": len(real),
        "seed": seed,
        "extra_photo_rate": extra_photo_rate,
        "photo_share": photo_share,
        "per_side": {
            SIDES[s]: {
                "sigma": round(v[2], 4),
                "photo_sigma": round(v[3], 4),
                "real_nn_distance_median": round(v[4], 4),
            }
            for s, v in per_side.items()
        },
        "items": items,
        "images_per_item": round(n_images / max(items, 1), 3),
    }
    noise_models = {side_index: value[1] for side_index, value in per_side.items()}
    image_ids = np.arange(1, n_images + 1, dtype=np.int64)
    return Catalogue(vectors, image_ids, item_ids, sides, item_labels, generator, noise_models)


def queries_make(
    *, catalogue: Catalogue, count: int, real: RealSet, items: np.ndarray | None = None, seed: int = 11
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query photos: new photographs of catalogued coins (of ``items`` if given) -> (vectors, sides, item ids)."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(catalogue)) if items is None else np.flatnonzero(np.isin(catalogue.item_ids, items))
    picks = rng.choice(pool, size=min(count, len(pool)), replace=False)
    sides = catalogue.sides[picks]
    out = np.empty((len(picks), catalogue.vectors.shape[1]), np.float32)
    photo_sigma = {s: catalogue.generator["per_side"][SIDES[s]]["photo_sigma"] for s in (0, 1)}
    for s in (0, 1):
        mask = sides == s
        if mask.any():
            noise = catalogue.noise[s]
            moved = catalogue.vectors[picks[mask]] + noise.sample(rng, int(mask.sum()), photo_sigma[s])
            out[mask] = _normalise(np.maximum(moved, 0.0))
    return out, sides, catalogue.item_ids[picks]


def exact_neighbours(
    *, catalogue: Catalogue, sims: np.ndarray, mask: np.ndarray, limit: int
) -> list[tuple[int, int, float]]:
    """[(image_id, item_id, similarity)] of the ``limit`` nearest allowed images, nearest first.

    ``sims`` holds one query's float32 cosine similarity to every catalogue image (exact search).
    """
    rows = np.flatnonzero(mask)
    values = sims[rows]
    if len(rows) > limit:
        part = np.argpartition(-values, limit - 1)[:limit]
        rows, values = rows[part], values[part]
    order = np.argsort(-values, kind="stable")
    return [
        (int(catalogue.image_ids[r]), int(catalogue.item_ids[r]), float(values[o]))
        for o, r in zip(order, rows[order], strict=True)
    ]


def top_items(rows: Iterable[tuple[int, int, float]], k: int = TOP_ITEMS) -> list[int]:
    """The k best items of one photo's image hits, ranked as the platform ranks (no labels: no agreement)."""
    hits = list(rows)
    photo = QueryPhoto(0, None, np.zeros((1, 1), np.float32), [None])
    return [item.item_id for item in rank_items([photo], lambda vector, side: hits, lambda items: {}, k=k)]


def selective_filter_pick(*, catalogue: Catalogue, target_share: float = 0.003) -> dict[str, str]:
    """One ruler's gold coins (the authority whose gold coins' share of items is nearest target_share)."""
    counts = Counter(
        labels.get("authority", "") for labels in catalogue.item_labels.values() if labels.get("material") == "Gold"
    )
    counts.pop("", None)
    if not counts:  # no gold at all: the rarest authority stands in
        counts = Counter(labels.get("authority", "") for labels in catalogue.item_labels.values())
        counts.pop("", None)
        authority = min(counts, key=lambda a: abs(counts[a] / len(catalogue.item_labels) - target_share))
        return {"authority": authority}
    total = len(catalogue.item_labels)
    authority = min(counts, key=lambda a: (abs(counts[a] / total - target_share), a))
    return {"authority": authority, "material": "Gold"}


def filter_items(catalogue: Catalogue, filters: dict[str, str]) -> np.ndarray:
    """Item ids whose labels match every filter."""
    return np.array(
        [i for i, labels in catalogue.item_labels.items() if all(labels.get(k) == v for k, v in filters.items())],
        dtype=np.int64,
    )


def slugify_label(value: str) -> str:
    """A slug like Concept.slug ("Gaius/Caligula" -> "gaius-caligula")."""
    out = "".join(ch.lower() if ch.isalnum() else "-" for ch in value)
    return "-".join(part for part in out.split("-") if part)


# --------------------------------------------------------------------------- database


def _conninfo(base: dict, dbname: str) -> dict:
    return {**base, "dbname": dbname}


def database_create(*, conninfo: dict, name: str) -> None:
    """CREATE DATABASE name with the vector extension (connecting to the server's postgres db)."""
    import psycopg

    throwaway_db.drop(name, **conninfo)
    with psycopg.connect(**_conninfo(conninfo, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(**_conninfo(conninfo, name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def storage_column(storage: str, dims: int) -> tuple[str, int, str]:
    """(SQL type, dimensions, HNSW opclass) of a storage choice: vector, halfvec or pca<k>."""
    if storage == "vector":
        return f"vector({dims})", dims, "vector_cosine_ops"
    if storage == "halfvec":
        return f"halfvec({dims})", dims, "halfvec_cosine_ops"
    if storage.startswith("pca") and storage[3:].isdigit():
        k = int(storage[3:])
        return f"vector({k})", k, "vector_cosine_ops"
    raise ValueError(f"unknown storage {storage!r} (vector, halfvec or pca<k>)")


def schema_create(conn, *, catalogue: Catalogue) -> None:
    """Concepts and item-concept links as in collection (Concept, Item.concepts), loaded with COPY."""
    conn.execute("CREATE TABLE concept (id bigint PRIMARY KEY, kind varchar(20) NOT NULL, slug varchar(200) NOT NULL)")
    conn.execute(
        "CREATE TABLE item_concepts (id bigserial PRIMARY KEY, item_id bigint NOT NULL, concept_id bigint NOT NULL)"
    )
    concept_ids: dict[tuple[str, str], int] = {}
    links = []
    for item_id, labels in catalogue.item_labels.items():
        for kind in KEY_KINDS:
            value = labels.get(kind)
            if value:
                key = (kind, slugify_label(value))
                concept_ids.setdefault(key, len(concept_ids) + 1)
                links.append((item_id, concept_ids[key]))
    with conn.cursor().copy("COPY concept (id, kind, slug) FROM STDIN") as copy:
        for (kind, slug), cid in concept_ids.items():
            copy.write_row((cid, kind, slug))
    with conn.cursor().copy("COPY item_concepts (item_id, concept_id) FROM STDIN") as copy:
        for link in links:
            copy.write_row(link)
    conn.execute("CREATE UNIQUE INDEX concept_kind_slug ON concept (kind, slug)")
    conn.execute("CREATE INDEX item_concepts_item ON item_concepts (item_id)")
    conn.execute("CREATE INDEX item_concepts_concept ON item_concepts (concept_id)")
    conn.execute("ANALYZE concept")
    conn.execute("ANALYZE item_concepts")


def embeddings_load(conn, *, table: str, column_type: str, vectors: np.ndarray, catalogue: Catalogue) -> float:
    """CREATE TABLE and binary COPY the embeddings (pgvector.psycopg types); seconds taken."""
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    register_vector(conn)
    conn.execute(
        f"CREATE TABLE {table} (id bigint PRIMARY KEY, image_id bigint NOT NULL, item_id bigint, "
        f"side varchar(10) NOT NULL, model_name varchar(100) NOT NULL, model_version varchar(50) NOT NULL, "
        f"vector {column_type} NOT NULL)"
    )
    half = column_type.startswith("halfvec")
    started = time.perf_counter()
    with conn.cursor().copy(
        f"COPY {table} (id, image_id, item_id, side, model_name, model_version, vector) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int8", "int8", "int8", "varchar", "varchar", "varchar", "halfvec" if half else "vector"])
        for row in range(len(catalogue)):
            vector = HalfVector(vectors[row]) if half else vectors[row]
            copy.write_row(
                (
                    int(catalogue.image_ids[row]),
                    int(catalogue.image_ids[row]),
                    int(catalogue.item_ids[row]),
                    SIDES[catalogue.sides[row]],
                    MODEL_NAME,
                    MODEL_VERSION,
                    vector,
                )
            )
    # The app's indexes besides HNSW: the (name, version, side) one and the item foreign key's.
    conn.execute(f"CREATE INDEX {table}_version_side ON {table} (model_name, model_version, side)")
    conn.execute(f"CREATE INDEX {table}_item ON {table} (item_id)")
    conn.execute(f"ANALYZE {table}")
    return time.perf_counter() - started


def hnsw_build(
    conn,
    *,
    table: str,
    opclass: str,
    maintenance_work_mem_mb: int,
    parallel_workers: int,
    log: Callable = print,
) -> dict:
    """CREATE INDEX ... USING hnsw with the app's m / ef_construction; time, size and peak server memory."""
    conn.execute(f"SET maintenance_work_mem = '{int(maintenance_work_mem_mb)}MB'")
    conn.execute(f"SET max_parallel_maintenance_workers = {int(parallel_workers)}")
    peak = MemorySampler(backend_pid=conn.info.backend_pid, interval=5.0).start()
    progress = BuildProgress(dsn=conn.info.dsn, backend_pid=conn.info.backend_pid, log=log).start()
    started = time.perf_counter()
    try:
        conn.execute(
            f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (vector {opclass}) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        )
    finally:
        seconds = time.perf_counter() - started
        peak.stop()
        progress.stop()
    index_bytes = conn.execute("SELECT pg_relation_size(%s::regclass)", [f"{table}_hnsw"]).fetchone()[0]
    table_bytes = conn.execute("SELECT pg_table_size(%s::regclass)", [table]).fetchone()[0]
    return {
        "build_s": round(seconds, 2),
        "index_mb": round(index_bytes / 2**20, 1),
        "table_mb": round(table_bytes / 2**20, 1),
        "m": HNSW_M,
        "ef_construction": HNSW_EF_CONSTRUCTION,
        "maintenance_work_mem_mb": int(maintenance_work_mem_mb),
        "max_parallel_maintenance_workers": int(parallel_workers),
        "server_peak_pss_mb": peak.peak_mb,
        "progress": progress.samples,
    }


def maintenance_work_mem_for(*, n: int, dims: int, half: bool) -> int:
    """MB for the HNSW graph of n elements to fit in memory while building (a spill slows the build a lot)."""
    per_element = dims * (2 if half else 4) + HNSW_M * 2 * 8 + 200  # vector + layer-0 neighbours + tuple overhead
    return max(256, int(n * per_element * 1.3 / 2**20))


SEARCH_SQL = (
    "SELECT e.image_id, e.item_id, e.vector <=> %(q)s AS distance FROM {table} e {joins}"
    "WHERE e.model_name = %(model_name)s AND e.model_version = %(model_version)s "
    "AND e.item_id IS NOT NULL AND e.side = %(side)s {where}"
    "ORDER BY distance LIMIT %(limit)s"
)


# identification.services._item_labels: the labels of every item a photo's searches found, in one
# query (the metadata agreement's input). Timed for the items of the last ROTATION_TURNS queries: an
# upper bound on one photo's turns, which find mostly the same items.
LABELS_SQL = (
    "SELECT ic.item_id, c.kind, c.slug FROM item_concepts ic INNER JOIN concept c ON c.id = ic.concept_id "
    "WHERE ic.item_id = ANY(%(items)s)"
)
ROTATION_TURNS = 8  # mlcore.pipeline.ROTATION_TURNS (not imported: this module stays free of torch)


def labels_run(conn, *, item_ids: Iterable[int]) -> int:
    """The candidates' labels query (``LABELS_SQL``) for these items; the number of rows read."""
    return len(conn.execute(LABELS_SQL, {"items": sorted(set(item_ids))}).fetchall())


def search_sql(*, table: str, filters: dict[str, str]) -> str:
    """The SQL Django builds for identification.search.nearest_images (one join per concept filter)."""
    joins, where = "", ""
    for n in range(len(filters)):
        joins += (
            f"INNER JOIN item_concepts ic{n} ON ic{n}.item_id = e.item_id "
            f"INNER JOIN concept c{n} ON c{n}.id = ic{n}.concept_id "
        )
        where += f"AND c{n}.kind = %(kind{n})s AND c{n}.slug = %(slug{n})s "
    return SEARCH_SQL.format(table=table, joins=joins, where=where)


def search_params(*, query, side: int, filters: dict[str, str], half: bool) -> dict:
    from pgvector import HalfVector, Vector

    params = {
        "q": HalfVector(query.astype(np.float16)) if half else Vector(query),
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "side": SIDES[side],
        "limit": NEIGHBOUR_IMAGES,
    }
    for n, kind in enumerate(sorted(filters)):
        params[f"kind{n}"] = kind
        params[f"slug{n}"] = slugify_label(filters[kind])
    return params


def search_run(
    conn, *, sql: str, params: dict, ef_search: int | None, iterative: str = "relaxed_order", exact: bool = False
) -> list[tuple[int, int, float]]:
    """One query as the app runs it (SET LOCAL ef_search / iterative_scan in a transaction)."""
    with conn.transaction():
        if exact:
            conn.execute("SET LOCAL enable_indexscan = off")
        else:
            conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
            conn.execute(f"SET LOCAL hnsw.iterative_scan = {iterative}")
        rows = conn.execute(sql, params).fetchall()
    return [(int(image_id), int(item_id), 1.0 - float(distance)) for image_id, item_id, distance in rows]


def plan_uses_hnsw(conn, *, sql: str, params: dict, ef_search: int) -> bool:
    with conn.transaction():
        conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params).fetchall())
    return "_hnsw" in plan


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


# --------------------------------------------------------------------------- memory


def server_processes(pgdata: Path | None = None) -> list:
    """The postmaster and its children (psutil Processes), found from postmaster.pid."""
    import psutil

    from config.embedded_db import pgdata_dir

    pid_file = Path(pgdata or pgdata_dir()) / "postmaster.pid"
    try:
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        return [postmaster, *postmaster.children(recursive=True)]
    except (OSError, ValueError, psutil.Error):
        return []


def server_memory(backend_pid: int | None = None) -> dict:
    """RSS of the whole server (postmaster + backends; shared buffers counted once per process),
    its PSS (shared pages split between processes: the honest total) and this run's backend."""
    import psutil

    rss = pss = 0
    backend = None
    for process in server_processes():
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        if process.pid == backend_pid:
            backend = info
    out = {"server_rss_mb": round(rss / 2**20, 1), "server_pss_mb": round(pss / 2**20, 1)}
    if backend is not None:
        out["backend_rss_mb"] = round(backend.rss / 2**20, 1)
        out["backend_uss_mb"] = round(getattr(backend, "uss", backend.rss) / 2**20, 1)
    return out


def backend_cpu_ns(pid: int) -> int:
    """CPU time a process has run, in ns (/proc/<pid>/schedstat: exact, unlike tick-based counters)."""
    try:
        with open(f"/proc/{pid}/schedstat") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def process_memory_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


class BuildProgress:
    """Logs pg_stat_progress_create_index every ``interval`` seconds (a long build shows its rate)."""

    def __init__(self, *, dsn: str, backend_pid: int, log: Callable, interval: float = 60.0) -> None:
        self.dsn, self.backend_pid, self.log, self.interval = dsn, backend_pid, log, interval
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        started = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                row = conn.execute(
                    "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE pid = %s",
                    [self.backend_pid],
                ).fetchone()
                if row:
                    sample = {"s": round(time.perf_counter() - started), "phase": row[0], "tuples_done": row[1]}
                    self.samples.append(sample)
                    self.log(f"  index build: {sample} of {row[2]}")

    def start(self) -> BuildProgress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class MemorySampler:
    """Peak PSS of the server while something runs (sampled every second in a thread)."""

    def __init__(self, *, backend_pid: int | None = None, interval: float = 1.0) -> None:
        self.backend_pid = backend_pid
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, server_memory(self.backend_pid)["server_pss_mb"])
            self._stop.wait(self.interval)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- the benchmark


def real_project(real: RealSet, *, dims: int, seed: int = 3) -> RealSet:
    """The real set in another width (random orthogonal projection; for other --dims only)."""
    if dims == real.vectors.shape[1]:
        return real
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((real.vectors.shape[1], dims)))
    projected = np.maximum(real.vectors @ basis.astype(np.float32), 0.0)
    return RealSet(_normalise(projected), real.record_ids, real.sides, real.labels)


def pca_basis(real: RealSet, k: int) -> np.ndarray:
    """(k, d) top right singular vectors of the uncentred real embeddings: keeps dot products best."""
    _, _, vt = np.linalg.svd(real.vectors, full_matrices=False)
    return vt[:k].astype(np.float32)


@dataclass
class BenchOptions:
    """What one bench_scale run measures."""

    sizes: list[int]
    storages: list[str] = field(default_factory=lambda: list(STORAGE_KINDS))
    queries: int = 200
    ef_search: list[int] = field(default_factory=lambda: [40, 100, 200])
    parallel_workers: int = 1
    maintenance_work_mem_mb: int | None = None  # None: enough for the graph to fit
    exact_sql_checks: int = 3
    warmup: int = 20
    keep: bool = False
    seed: int = 7


def bench_run(
    *,
    real: RealSet,
    conninfo: dict,
    options: BenchOptions,
    out_path: Path | None = None,
    plot_path: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every size and storage; the report (also written to out_path after every step)."""
    report: dict = {
        "options": asdict(options),
        "machine": {"cpus": os.cpu_count(), "memory_gb": _total_memory_gb()},
        "server": {},
        "process_rss_mb_at_start": process_memory_mb(),
        "runs": [],
    }
    report["server"] = _server_settings(conninfo)

    def save() -> None:
        if out_path:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            Path(out_path).write_text(json.dumps(report, indent=2))
        if plot_path:
            try:
                plot_write(report, Path(plot_path))
            except ImportError:
                log("matplotlib is not installed: no plot")

    for n in options.sizes:
        started = time.perf_counter()
        catalogue = synthetic_catalogue(real=real, n_images=n, seed=options.seed)
        log(f"[{n}] catalogue generated in {time.perf_counter() - started:.1f}s: {catalogue.generator}")
        filters = selective_filter_pick(catalogue=catalogue)
        allowed = filter_items(catalogue, filters)
        q_plain = queries_make(catalogue=catalogue, count=options.queries, real=real)
        q_filter = queries_make(catalogue=catalogue, count=options.queries, real=real, items=allowed)
        allowed_mask = np.isin(catalogue.item_ids, allowed)
        truth = {
            "none": _truth(catalogue, q_plain, None),
            "filter": _truth(catalogue, q_filter, allowed_mask),
        }
        name = f"obverse_scale_{os.getpid()}_{n}"
        database_create(conninfo=conninfo, name=name)
        size_report = {
            "n_images": n,
            "n_items": int(catalogue.item_ids[-1]),
            "database": name,
            "generator": catalogue.generator,
            "filter": {**filters, "items": int(len(allowed)), "images": int(allowed_mask.sum())},
            "storages": [],
        }
        report["runs"].append(size_report)
        try:
            import psycopg

            with psycopg.connect(**_conninfo(conninfo, name), autocommit=True) as conn:
                schema_create(conn, catalogue=catalogue)
                for storage in options.storages:
                    # Filled in place and saved after every step: a run stopped midway keeps its figures.
                    measured: dict = {"storage": storage}
                    size_report["storages"].append(measured)
                    _storage_measure(
                        conn,
                        out=measured,
                        save=save,
                        storage=storage,
                        catalogue=catalogue,
                        real=real,
                        queries={"none": q_plain, "filter": q_filter},
                        truth=truth,
                        filters=filters,
                        options=options,
                        log=log,
                    )
                    save()
        finally:
            if not options.keep:
                throwaway_db.drop(name, **conninfo)
        size_report["total_s"] = round(time.perf_counter() - started, 1)
        save()
        del catalogue, truth
    report["process_rss_mb_at_end"] = process_memory_mb()
    save()
    return report


def _truth(catalogue: Catalogue, queries: tuple, allowed_mask: np.ndarray | None) -> list[list[int]]:
    """Exact top-8 items (from the exact 80 nearest images) of every query, in float32."""
    vectors, sides, _ = queries
    out: list[list[int]] = []
    for start in range(0, len(vectors), 64):
        sims = catalogue.vectors @ vectors[start : start + 64].T  # (N, q): one pass over the catalogue
        for j in range(sims.shape[1]):
            mask = catalogue.sides == sides[start + j]
            if allowed_mask is not None:
                mask = mask & allowed_mask
            rows = exact_neighbours(catalogue=catalogue, sims=sims[:, j], mask=mask, limit=NEIGHBOUR_IMAGES)
            out.append(top_items(rows))
    return out


def _storage_measure(
    conn, *, out: dict, save: Callable, storage, catalogue, real, queries, truth, filters, options: BenchOptions, log
) -> dict:
    n = len(catalogue)
    column_type, dims, opclass = storage_column(storage, catalogue.vectors.shape[1])
    half = column_type.startswith("halfvec")
    table = f"emb_{storage}"
    if storage.startswith("pca"):
        basis = pca_basis(real, dims)
        vectors = _normalise(catalogue.vectors @ basis.T)
        project = lambda q: _normalise(q @ basis.T)  # noqa: E731
    else:
        vectors, project = catalogue.vectors, (lambda q: q)
    out.update({"storage": storage, "column": column_type})
    out["load_s"] = round(
        embeddings_load(conn, table=table, column_type=column_type, vectors=vectors, catalogue=catalogue), 2
    )
    log(f"[{n}] {storage}: loaded in {out['load_s']}s")
    mwm = options.maintenance_work_mem_mb or maintenance_work_mem_for(n=n, dims=dims, half=half)
    out["index"] = hnsw_build(
        conn,
        table=table,
        opclass=opclass,
        maintenance_work_mem_mb=mwm,
        parallel_workers=options.parallel_workers,
        log=log,
    )
    log(f"[{n}] {storage}: index {out['index']}")
    save()
    conn.execute("SELECT pg_prewarm(%s)", [f"{table}_hnsw"]) if _has_prewarm(conn) else None
    sql = {mode: search_sql(table=table, filters=filters if mode == "filter" else {}) for mode in ("none", "filter")}

    def params(mode: str, j: int) -> dict:
        vectors_q, sides_q, _ = queries[mode]
        return search_params(
            query=project(vectors_q[j]), side=int(sides_q[j]), filters=filters if mode == "filter" else {}, half=half
        )

    # Exact search in this storage (sequential scan) on a few queries: agreement with float32 truth.
    agree = []
    for j in range(min(options.exact_sql_checks, len(queries["none"][0]))):
        rows = search_run(conn, sql=sql["none"], params=params("none", j), ef_search=None, exact=True)
        agree.append(_recall(top_items(rows), truth["none"][j]))
    out["exact_sql_recall_vs_float32"] = round(statistics.fmean(agree), 4) if agree else None
    for j in range(min(options.warmup, len(queries["none"][0]))):  # page the index in, as a running server has it
        search_run(conn, sql=sql["none"], params=params("none", j), ef_search=max(options.ef_search))
    out["search"] = []
    backend = conn.info.backend_pid
    for ef in options.ef_search:
        for mode in ("none", "filter"):
            vectors_q, _, true_items = queries[mode]
            latencies, cpu, recalls, hits, labels_ms, labels_items = [], [], [], [], [], []
            turns: list[list[int]] = []  # the items of the last ROTATION_TURNS searches, as one photo's
            for j in range(len(vectors_q)):
                p = params(mode, j)
                backend_before, client_before = backend_cpu_ns(backend), time.thread_time_ns()
                started = time.perf_counter()
                rows = search_run(conn, sql=sql[mode], params=p, ef_search=ef)
                items = top_items(rows)
                latencies.append((time.perf_counter() - started) * 1000)
                spent = backend_cpu_ns(backend) - backend_before + time.thread_time_ns() - client_before
                cpu.append(spent / 1e6)
                recalls.append(_recall(items, truth[mode][j]))
                hits.append(float(int(true_items[j]) in items))
                turns = [*turns[-(ROTATION_TURNS - 1) :], [item_id for _, item_id, _ in rows]]
                found = {item_id for turn in turns for item_id in turn}
                started = time.perf_counter()
                labels_run(conn, item_ids=found)
                labels_ms.append((time.perf_counter() - started) * 1000)
                labels_items.append(len(found))
            entry = {
                "ef_search": ef,
                "filter": mode,
                "queries": len(vectors_q),
                "p50_ms": round(percentile(latencies, 50), 2),
                "p95_ms": round(percentile(latencies, 95), 2),
                # CPU time of the query (server backend + this process): the latency on an idle machine.
                "cpu_p50_ms": round(percentile(cpu, 50), 2),
                "cpu_p95_ms": round(percentile(cpu, 95), 2),
                "recall_at_8": round(statistics.fmean(recalls), 4) if recalls else None,
                "true_item_in_top8": round(statistics.fmean(hits), 4) if hits else None,
                # The metadata agreement's labels query, over the items of up to ROTATION_TURNS searches.
                "labels_p50_ms": round(percentile(labels_ms, 50), 2),
                "labels_p95_ms": round(percentile(labels_ms, 95), 2),
                "labels_items_p50": round(percentile(labels_items, 50), 1),
                "loadavg_1m": round(os.getloadavg()[0], 2),  # CPU contention while measuring
                "uses_hnsw": plan_uses_hnsw(conn, sql=sql[mode], params=params(mode, 0), ef_search=ef)
                if len(vectors_q)
                else None,
            }
            out["search"].append(entry)
            save()
            log(f"[{n}] {storage}: {entry}")
    out["memory"] = {**server_memory(conn.info.backend_pid), "process_rss_mb": process_memory_mb()}
    if not options.keep:
        conn.execute(f"DROP TABLE {table}")
    return out


def _recall(found: Sequence[int], exact: Sequence[int]) -> float:
    return len(set(found) & set(exact)) / len(exact) if exact else 1.0


def _has_prewarm(conn) -> bool:
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        return True
    except Exception:  # the extension is optional; without it the warm-up queries do the job
        return False


def _total_memory_gb() -> float:
    import psutil

    return round(psutil.virtual_memory().total / 2**30, 1)


def _server_settings(conninfo: dict) -> dict:
    import psycopg

    names = ("shared_buffers", "effective_cache_size", "work_mem", "max_parallel_maintenance_workers", "server_version")
    with psycopg.connect(**_conninfo(conninfo, "postgres"), autocommit=True) as conn:
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}
        settings["pgvector"] = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()[0]
    return settings


def plot_write(report: dict, path: Path) -> None:
    """Latency p95 (wall and CPU) and recall@8 against N, one line per storage / ef_search / filter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple, list[tuple]] = {}
    for run in report["runs"]:
        for storage in run["storages"]:
            for entry in storage.get("search", []):
                key = (storage["storage"], entry["ef_search"], entry["filter"])
                point = (run["n_images"], entry["p95_ms"], entry.get("cpu_p95_ms"), entry["recall_at_8"])
                series.setdefault(key, []).append(point)
    fig, (ax_wall, ax_cpu, ax_recall) = plt.subplots(1, 3, figsize=(18, 5.5))
    colours = {key: plt.get_cmap("tab10")(n % 10) for n, key in enumerate(sorted({k[:2] for k in series}))}
    for (storage, ef, mode), points in sorted(series.items()):
        points.sort()
        xs = [p[0] for p in points]
        style = {"color": colours[(storage, ef)], "ls": "-" if mode == "none" else "--", "marker": "o"}
        label = f"{storage} ef={ef} {'filtered' if mode == 'filter' else 'unfiltered'}"
        ax_wall.plot(xs, [p[1] for p in points], label=label, **style)
        ax_cpu.plot(xs, [p[2] for p in points], label=label, **style)
        ax_recall.plot(xs, [p[3] for p in points], label=label, **style)
    for ax in (ax_wall, ax_cpu):
        ax.set_yscale("log")
        ax.axhline(20, color="grey", lw=0.8, ls=":")
        ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax_recall.axhline(0.95, color="grey", lw=0.8, ls=":")
    titles = (
        (ax_wall, "top-8 latency p95, wall clock (ms, shared CPU)"),
        (ax_cpu, "top-8 latency p95, CPU time (ms) = idle machine"),
        (ax_recall, "recall@8 vs exact float32"),
    )
    for ax, title in titles:
        ax.set_xscale("log")
        ax.set_xlabel("catalogue images (N)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    ax_recall.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
