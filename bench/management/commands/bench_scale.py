"""Measure identification search at museum scale in a throw-away pgvector database (see docs/scaling.md)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from bench import scale
from config.throwaway_db import server_params

DEFAULT_DATA_DIR = Path(settings.BASE_DIR).parent / "shared" / "data" / "ans-roman"


def _int_list(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part.strip()]


class Command(BaseCommand):
    help = (
        "Fill throw-away databases with N synthetic catalogue image embeddings (shaped like real "
        "MobileNetV2 embeddings of ans-roman) and measure HNSW build time and size, top-8 query "
        "latency and recall@8 against exact search, per storage (vector, halfvec, pca<k>). "
        "Writes JSON (and a PNG plot); the databases are dropped unless --keep."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sizes", default="10000,100000,600000", help="Catalogue sizes (images), comma-separated.")
        parser.add_argument("--dims", type=int, default=1280, help="Embedding width (1280: MobileNetV2 features).")
        parser.add_argument("--storage", default="vector,halfvec", help="vector, halfvec and/or pca<k> (e.g. pca384).")
        parser.add_argument("--queries", type=int, default=200, help="Query photos per size and filter mode.")
        parser.add_argument("--ef-search", default="40,100,200", help="hnsw.ef_search values to measure.")
        parser.add_argument("--parallel-workers", type=int, default=1, help="max_parallel_maintenance_workers.")
        parser.add_argument("--maintenance-work-mem", type=int, help="MB for the index build (default: graph fits).")
        parser.add_argument("--out", default="var/bench/scale.json")
        parser.add_argument("--plot", help="PNG path (default: --out with .png).")
        parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="ans-roman folder (labels, images).")
        parser.add_argument("--real-cache", default="var/bench/ans_roman_mobilenetv2.npz")
        parser.add_argument("--keep", action="store_true", help="Keep the databases (named in the JSON).")

    def handle(self, *args, **options):
        storages = [s.strip() for s in options["storage"].split(",") if s.strip()]
        for storage in storages:
            try:
                scale.storage_column(storage, options["dims"])
            except ValueError as error:
                raise CommandError(str(error)) from error
        data_dir = Path(options["data_dir"])
        if not (data_dir / "labels.csv").exists():
            raise CommandError(
                f"no ans-roman data at {data_dir} (labels.csv): the generator starts from real embeddings"
            )
        real = scale.real_embeddings_load(
            data_dir=data_dir,
            cache_path=Path(options["real_cache"]),
            models_dir=Path(settings.OBVERSE_MODELS_DIR),
            log=self.stdout.write,
        )
        real = scale.real_project(real, dims=options["dims"])
        out = Path(options["out"])
        plot = Path(options["plot"]) if options["plot"] else out.with_suffix(".png")
        bench = scale.BenchOptions(
            sizes=_int_list(options["sizes"]),
            storages=storages,
            queries=options["queries"],
            ef_search=_int_list(options["ef_search"]),
            parallel_workers=options["parallel_workers"],
            maintenance_work_mem_mb=options["maintenance_work_mem"],
            keep=options["keep"],
        )
        scale.bench_run(
            real=real, conninfo=server_params(), options=bench, out_path=out, plot_path=plot, log=self.stdout.write
        )
        self.stdout.write(self.style.SUCCESS(f"figures in {out}, plot in {plot}"))
