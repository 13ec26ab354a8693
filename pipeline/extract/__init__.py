"""Stage 1: posts -> (plan -> reader -> mapper -> writer) -> a sharded feature store.

`run_extract` (local.py) runs in one process or submits shards to dask (cluster.py).
"""
from pipeline.extract.build import build_extractor, extractor_from_store
from pipeline.extract.local import run_extract
from pipeline.extract.options import ExtractReport, RunOptions

__all__ = ["build_extractor", "extractor_from_store", "run_extract", "ExtractReport", "RunOptions"]
