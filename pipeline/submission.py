"""The SMP Challenge submission file (../shared/SMPD.md), written by `pipe score --submission`.

One JSON object: `version` "VERSION 1.2", `result` with one `{post_id, popularity_score}`
per scored post (post_id as ingested: SMPD's Pid), and `external_data` saying whether
pretrained weights were used and which (`used` is the string "true" or "false", as the
challenge's pages write it). `validate` checks a document against that format.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.core.errors import PipeError
from pipeline.core.io import atomic_write_bytes

VERSION = "VERSION 1.2"


def external_data(store_configs: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """From role -> (extractor name, extractor config) of the run's stores: which pretrained
    weights the features came from ("random" and weight-free extractors count as none)."""
    used = []
    for role, (name, cfg) in sorted(store_configs.items()):
        weights = cfg.get("weights")
        if weights and weights != "random":
            model = cfg.get("model") or cfg.get("layer") or ""
            used.append(f"{role}: {name} {model} with {weights} pretrained weights".replace("  ", " "))
    return {"used": "true" if used else "false",
            "details": "; ".join(used) if used else "no pretrained weights (features from random or weight-free extractors)"}


def submission(scores: pl.DataFrame, external: dict[str, str]) -> dict[str, Any]:
    """The document for a `pipe score` regression table (post_id, score)."""
    result = [{"post_id": str(p), "popularity_score": round(float(v), 4)}
              for p, v in zip(scores["post_id"].to_list(), scores["score"].to_list())]
    return {"version": VERSION, "result": result, "external_data": external}


def validate(doc: Any, post_ids: list[str] | None = None) -> list[str]:
    """Problems with a submission document (empty: it follows the format); with `post_ids`,
    also that every one has exactly one entry and no other post does."""
    if not isinstance(doc, dict):
        return ["the document is not a JSON object"]
    problems = []
    if doc.get("version") != VERSION:
        problems.append(f"version is {doc.get('version')!r}, not {VERSION!r}")
    ext = doc.get("external_data")
    if not isinstance(ext, dict) or ext.get("used") not in ("true", "false") or not isinstance(ext.get("details"), str):
        problems.append('external_data must be {"used": "true"|"false", "details": "..."}')
    result = doc.get("result")
    if not isinstance(result, list):
        return problems + ["result is not a list"]
    seen: list[str] = []
    for i, r in enumerate(result):
        ok = isinstance(r, dict) and set(r) == {"post_id", "popularity_score"} and isinstance(r["post_id"], str) \
            and isinstance(r["popularity_score"], (int, float)) and math.isfinite(r["popularity_score"])
        if not ok:
            problems.append(f"result[{i}] is not {{post_id: str, popularity_score: finite number}}: {r!r}")
        else:
            seen.append(r["post_id"])
    if len(set(seen)) != len(seen):
        problems.append(f"{len(seen) - len(set(seen))} duplicate post ids in result")
    if post_ids is not None and set(seen) != set(post_ids):
        miss, extra = set(post_ids) - set(seen), set(seen) - set(post_ids)
        problems.append(f"{len(miss)} posts without an entry, {len(extra)} entries for other posts")
    return problems


def write_submission(path: str | Path, scores: pl.DataFrame, external: dict[str, str]) -> Path:
    """Write and check the submission for a regression scores table."""
    if "score" not in scores.columns:
        raise PipeError("--submission is for regression runs (a popularity score per post)")
    doc = submission(scores, external)
    problems = validate(doc, scores["post_id"].to_list())
    if problems:
        raise PipeError("submission would not follow the SMP format: " + "; ".join(problems))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
    return path
