"""Evaluation on labelled datasets: metrics (pure numpy), dataset layouts, the runner and reports.

``from inspector.evaluate import evaluate, load_dataset`` is the usual entry; the runner (which
pulls in the pipelines) is imported lazily so that the metrics stay cheap to import.
"""

from __future__ import annotations

from typing import Any

from inspector.evaluate.datasets import Dataset, DatasetError, Sample, load_dataset

__all__ = ["Dataset", "DatasetError", "EvalResult", "Sample", "evaluate", "load_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "EvalResult"):
        from inspector.evaluate import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'inspector.evaluate' has no attribute {name!r}")
