"""Metadata (ruler, mint, material, denomination…) from the nearest catalogue images, with calibrated confidence.

``vote`` is a pure function of neighbours ``[(labels, cosine similarity)]``, so the same code serves
pgvector neighbours on the Django side and in-memory neighbours in training. Each neighbour's
weight is ``exp(similarity / temperature)`` (close neighbours count much more); a field's raw
confidence is the winning value's share of the weight of neighbours that have that field.

Raw shares are not probabilities (five near-identical neighbours agree whether or not they are
right), so training fits a per-field monotone map (isotonic regression) from raw share to the
observed accuracy on catalogue types held out of the neighbour pool: afterwards "0.8" means right
about 80% of the time on a coin whose type the neighbours did not include.

The same shares also rank candidates: ``agreement_bonuses`` gives each candidate item a bonus for
metadata that its query's nearest images point to more than the wider neighbourhood does.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcore.base import LazyModel, register
from mlcore.dataset import METADATA_FIELDS
from mlcore.versions import resolve

logger = logging.getLogger(__name__)

FILENAME = "metadata.json"
DEFAULT_TEMPERATURE = 0.05
DEFAULT_K = 20
MIN_CALIBRATION_SAMPLES = 30
# A concept kind beyond METADATA_FIELDS (region, dynasty, a gem's stone…) is predicted once this many
# catalogue records carry it, with at least two different values (``metadata_fields``).
MIN_FIELD_RECORDS = 30
COVERAGES = (0.5, 0.8, 1.0)
# Ranking bonus for metadata agreement (``agreement_bonuses``), in units of the query's own spread of
# similarities; chosen on held-out types in balanced and skewed catalogues, docs/ml-notes.md.
AGREEMENT_WEIGHT = 4.0


@dataclass(frozen=True)
class Prediction:
    """A predicted value, its (calibrated, when a map is given) confidence and the raw vote share."""

    value: str
    confidence: float
    raw: float
    support: int  # neighbours that carried this field


@dataclass
class CalibrationMap:
    """A monotone piecewise-linear map raw share → probability of being right."""

    xs: list[float]
    ys: list[float]

    def __call__(self, raw: float) -> float:
        return float(np.interp(raw, self.xs, self.ys))

    @classmethod
    def identity(cls) -> CalibrationMap:
        return cls([0.0, 1.0], [0.0, 1.0])


def _tally(
    neighbours: Iterable[tuple[dict[str, str], float]],
    *,
    fields: Sequence[str] | None,
    temperature: float,
    k: int | None,
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per field, each value's summed weight among the ``k`` most similar neighbours, and the support."""
    ranked = sorted(neighbours, key=lambda pair: -pair[1])
    if k is not None:
        ranked = ranked[:k]
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    support: dict[str, int] = defaultdict(int)
    if not ranked:
        return totals, support
    top = ranked[0][1]
    wanted = set(fields) if fields is not None else None
    for labels, similarity in ranked:
        # Subtract the best similarity before exponentiating: same shares, no overflow.
        weight = math.exp((float(similarity) - top) / temperature)
        for name, value in labels.items():
            if not value or (wanted is not None and name not in wanted):
                continue
            totals[name][value] += weight
            support[name] += 1
    return totals, support


def vote(
    neighbours: Iterable[tuple[dict[str, str], float]],
    *,
    fields: Sequence[str] | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    k: int | None = None,
    calibration: dict[str, CalibrationMap] | None = None,
) -> dict[str, Prediction]:
    """Similarity-weighted vote per field over the ``k`` most similar neighbours.

    Fields no neighbour carries are absent from the result. With ``calibration``, ``confidence``
    is the calibrated probability (fields without a map keep the raw share).
    """
    totals, support = _tally(neighbours, fields=fields, temperature=temperature, k=k)
    result = {}
    for name, values in totals.items():
        # Ties break by value so the result does not depend on neighbour order.
        value, best = max(values.items(), key=lambda item: (item[1], item[0]))
        raw = best / sum(values.values())
        confidence = calibration[name](raw) if calibration and name in calibration else raw
        result[name] = Prediction(value=value, confidence=confidence, raw=raw, support=support[name])
    return result


def value_shares(
    neighbours: Iterable[tuple[dict[str, str], float]],
    *,
    fields: Sequence[str] | None = METADATA_FIELDS,
    temperature: float = DEFAULT_TEMPERATURE,
    k: int | None = DEFAULT_K,
) -> dict[str, dict[str, float]]:
    """Per field, every value's share of the vote (``vote`` keeps only the winner): {field: {value: share}}."""
    totals, _ = _tally(neighbours, fields=fields, temperature=temperature, k=k)
    return {name: {value: w / sum(values.values()) for value, w in values.items()} for name, values in totals.items()}


def agreement_bonuses(
    hits: Sequence[tuple[Any, Mapping[str, str], float]],
    *,
    weight: float = AGREEMENT_WEIGHT,
    fields: Sequence[str] = METADATA_FIELDS,
    temperature: float = DEFAULT_TEMPERATURE,
    k: int = DEFAULT_K,
) -> dict[Any, float]:
    """Each item's ranking bonus for how far its metadata agrees with the query's nearest images.

    ``hits`` are one query's image hits ``(item id, item labels, similarity)``, as deep as the search
    reads them (the *pool*). For each field, a value's *share* among the ``k`` nearest (the vote's
    weighting) is compared with its share of the whole pool: a ruler that the nearest images point
    to more than the neighbourhood at large does is evidence; a ruler that is everywhere because the
    catalogue is full of it is not (a plain share was a frequency prior: on a catalogue where one
    ruler had a third of the coins it lost recall). An item's bonus is ``weight`` × the spread of
    the query's own similarities (best − ``k``-th) × the mean of that excess over the fields, so the
    bonus is on the scale of the scores, whatever the model. Items without labels get 0.
    Measured in docs/ml-notes.md (seventh session).
    """
    ranked = sorted(hits, key=lambda h: -h[2])
    if not ranked or weight == 0:
        return {}
    near = value_shares([(labels, score) for _, labels, score in ranked], fields=fields, temperature=temperature, k=k)
    if not near:
        return {}
    pool: dict[str, dict[str, float]] = {name: defaultdict(float) for name in near}
    for _, labels, _ in ranked:
        for name in near:
            if labels.get(name):
                pool[name][labels[name]] += 1.0
    for name, counts in pool.items():
        total = sum(counts.values())
        pool[name] = {value: n / total for value, n in counts.items()}
    spread = ranked[0][2] - ranked[min(k, len(ranked)) - 1][2]
    bonuses: dict[Any, float] = {}
    for item, labels, _ in ranked:
        if item in bonuses:
            continue
        excess = [
            near[name].get(labels[name], 0.0) - pool[name].get(labels[name], 0.0) if labels.get(name) else 0.0
            for name in near
        ]
        bonuses[item] = weight * spread * sum(excess) / len(excess)
    return bonuses


def calibration_fit(raw: Sequence[float], correct: Sequence[bool]) -> CalibrationMap:
    """Isotonic map from raw share to accuracy; with few samples, the overall accuracy (a flat map)."""
    raw_array = np.asarray(raw, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    if len(raw_array) == 0:
        return CalibrationMap.identity()
    if len(raw_array) < MIN_CALIBRATION_SAMPLES or len(set(hits.tolist())) < 2:
        level = float(hits.mean())
        return CalibrationMap([0.0, 1.0], [level, level])
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw_array, hits)
    xs = [float(x) for x in model.X_thresholds_]
    ys = [float(y) for y in model.y_thresholds_]
    return CalibrationMap(xs, ys)


def calibration_report(confidence: Sequence[float], correct: Sequence[bool], *, bins: int = 10) -> dict[str, Any]:
    """Accuracy, accuracy at coverage (most confident fraction), expected calibration error."""
    conf = np.asarray(confidence, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    if len(conf) == 0:
        return {"n": 0}
    order = np.argsort(-conf, kind="stable")
    at_coverage = {}
    for coverage in COVERAGES:
        n = max(1, int(round(coverage * len(conf))))
        at_coverage[f"{coverage:.0%}"] = round(float(hits[order[:n]].mean()), 4)
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = sum(
        abs(conf[index == b].mean() - hits[index == b].mean()) * (index == b).sum() / len(conf)
        for b in range(bins)
        if (index == b).any()
    )
    confident = conf >= 0.8
    return {
        "n": len(conf),
        "accuracy": round(float(hits.mean()), 4),
        "accuracy_at_coverage": at_coverage,
        "coverage_at_0.8": round(float(confident.mean()), 4),
        "accuracy_at_0.8": round(float(hits[confident].mean()), 4) if confident.any() else None,
        "ece": round(float(ece), 4),
    }


@dataclass
class MetadataModel:
    """What training stores: vote parameters and one calibration map per field."""

    temperature: float = DEFAULT_TEMPERATURE
    k: int = DEFAULT_K
    calibration: dict[str, CalibrationMap] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        data = {
            "temperature": self.temperature,
            "k": self.k,
            "calibration": {name: {"xs": m.xs, "ys": m.ys} for name, m in self.calibration.items()},
        }
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> MetadataModel:
        data = json.loads(path.read_text())
        return cls(
            temperature=float(data["temperature"]),
            k=int(data["k"]),
            calibration={name: CalibrationMap(m["xs"], m["ys"]) for name, m in data["calibration"].items()},
        )


def metadata_fields(labels: Iterable[Mapping[str, str]], *, min_records: int = MIN_FIELD_RECORDS) -> list[str]:
    """The fields to predict: METADATA_FIELDS, and every other kind with enough labelled examples."""
    counts: dict[str, int] = defaultdict(int)
    values: dict[str, set[str]] = defaultdict(set)
    for record in labels:
        for name, value in record.items():
            if value:
                counts[name] += 1
                values[name].add(value)
    extra = {name for name in counts if counts[name] >= min_records and len(values[name]) >= 2}
    return sorted(set(METADATA_FIELDS) | extra)


def metadata_fit(
    queries: Sequence[tuple[list[tuple[dict[str, str], float]], dict[str, str]]],
    *,
    fields: Sequence[str] = METADATA_FIELDS,
    temperatures: Sequence[float] = (0.02, 0.05, 0.1),
    k: int = DEFAULT_K,
) -> tuple[MetadataModel, dict[str, Any]]:
    """Choose the temperature and fit per-field calibration from held-out queries [(neighbours, true labels)].

    Metrics are measured on the half of the queries the calibration was not fitted on (then the
    maps are refitted on all of them).
    """

    def outcomes(temperature: float, rows) -> dict[str, tuple[list[float], list[bool]]]:
        per_field: dict[str, tuple[list[float], list[bool]]] = {name: ([], []) for name in fields}
        for neighbours, truth in rows:
            predictions = vote(neighbours, fields=fields, temperature=temperature, k=k)
            for name in fields:
                if truth.get(name) and name in predictions:
                    per_field[name][0].append(predictions[name].raw)
                    per_field[name][1].append(predictions[name].value == truth[name])
        return per_field

    def brier(per_field) -> float:
        scores = [(r - float(c)) ** 2 for raws, hits in per_field.values() for r, c in zip(raws, hits, strict=True)]
        return float(np.mean(scores)) if scores else 1.0

    scored = {t: outcomes(t, queries) for t in temperatures}
    temperature = min(temperatures, key=lambda t: brier(scored[t]))
    half = len(queries) // 2
    fit_part, test_part = outcomes(temperature, queries[:half]), outcomes(temperature, queries[half:])
    metrics: dict[str, Any] = {"temperature": temperature, "k": k, "queries": len(queries), "fields": {}}
    calibration = {}
    for name in fields:
        raws, hits = scored[temperature][name]
        if not raws:
            continue
        held_map = calibration_fit(*fit_part[name])
        test_raws, test_hits = test_part[name]
        metrics["fields"][name] = {
            "raw": calibration_report(test_raws, test_hits),
            "calibrated": calibration_report([held_map(r) for r in test_raws], test_hits),
        }
        calibration[name] = calibration_fit(raws, hits)
    return MetadataModel(temperature=temperature, k=k, calibration=calibration), metrics


@register
class MetadataPredictor(LazyModel):
    """Calibrated metadata votes with the active trained version's parameters (raw shares until trained)."""

    name = "metadata-vote"
    version = "knn-vote-1"

    def __init__(self, models_dir, *, pinned_version: str | None = None) -> None:
        super().__init__(models_dir)
        self.pinned_version = pinned_version  # a trained version to use instead of the active one
        self.trained_version = ""

    def _load(self) -> MetadataModel:
        from mlcore.modelfiles import ModelFileError

        try:
            path, self.trained_version = resolve(self.models_dir, FILENAME, version=self.pinned_version)
        except ModelFileError as exc:
            # Metadata is advice shown to reviewers: uncalibrated shares beat failing the submission.
            logger.warning("metadata confidences are uncalibrated: %s", exc)
            self.trained_version = "uncalibrated"
            return MetadataModel()
        return MetadataModel.load(path)

    def describe(self) -> dict[str, str]:
        self.ensure_loaded()
        return {"name": self.name, "version": f"{self.version}/{self.trained_version}"}

    def predict(self, neighbours: Iterable[tuple[dict[str, str], float]]) -> dict[str, Prediction]:
        """The trained fields (those with a calibration map), or METADATA_FIELDS before any training."""
        model = self.ensure_loaded()
        fields = sorted(model.calibration) or list(METADATA_FIELDS)
        return vote(neighbours, fields=fields, temperature=model.temperature, k=model.k, calibration=model.calibration)
