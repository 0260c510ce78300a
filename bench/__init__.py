"""Tooling: benchmarks, evaluation, stress and scale runs. Never imported by the product packages."""
