"""Run directories: self-describing results of one `pipe train`.

    runs/<name>/
        config.json          written when the run starts: head, resolved head config,
                             dataset, stores read (extractor ids, specs), split, seeds,
                             library versions, git revision
        train_log.jsonl      one JSON object per line: run/repeat events and each
                             repeat's validation curve (the head's `history`)
        model/               the fitted head of repeat 0 (`Head.save`; no pickled code)
        predictions.parquet  post_id, split, y, yhat for every labelled post, from repeat 0
                             (the saved model, so `pipe score` reproduces these numbers)
        checkpoint/          while a torch head fits: repeat-K.pt, its resumable state at the
                             last evaluation (`pipe train --resume`); removed when the run ends
        interrupted.json     when the run stopped early (Ctrl-C, SIGTERM, an error): why
        metrics.json         written at the end: {"valid": {...}, "test": {...}, "std":
                             {"valid": {...}, "test": {...}}, "repeats": [...]}; means
                             and sample stds over the repeats

"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from pipeline.core import paths
from pipeline.core.errors import IntegrityError, PipeError, did_you_mean
from pipeline.core.io import (append_line, atomic_write_bytes, atomic_write_parquet, hold_lock, json_safe, parquet_bytes,
                               real_folder, remove_stale_temps)

CONFIG = "config.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.parquet"
TRAIN_LOG = "train_log.jsonl"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoint"  # the resumable state of the repeat in progress
INTERRUPTED = "interrupted.json"  # written when a run stops before its metrics
RUN_LOCK = ".run.lock"  # flock held by the one train writing the folder

LIBRARIES = ("pipe", "numpy", "polars", "pyarrow", "h5py", "scipy", "scikit-learn", "lightgbm", "torch", "torchvision")


def library_versions() -> dict[str, str | None]:
    found: dict[str, str] = {}
    for dist in metadata.distributions():  # one scan of site-packages
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        found.setdefault(name, dist.version)
    return {"python": sys.version.split()[0], **{lib: found.get(lib) for lib in LIBRARIES}}


def git_revision() -> dict[str, Any]:
    """Commit of the code that trained (and whether it had local changes); None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return {"revision": None, "dirty": None}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def default_run_name(head: str, ablate: tuple[str, ...] | list[str] = ()) -> str:
    """head, ablations, then a timestamp: `uhan-no-user-20250101-120000`."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return "-".join([head, *[f"no-{a}" for a in ablate], stamp])


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=1, allow_nan=False) + "\n").encode())


class RunWriter:
    """Creates a run directory and writes its files in the order the run produces them.

    A name the user chose must be new; a default name gets `-2`, `-3`, ... when runs
    started in the same second would collide.
    """

    def __init__(self, runs: str | Path | None, name: str, unique: bool = False, reopen: bool = False) -> None:
        self.dir = paths.run_dir(name, runs)  # a checked name, inside the runs root
        if reopen:  # `pipe train --resume`: the stopped run's own folder, taken over by this process
            self._lock = hold_lock(self.dir / RUN_LOCK, f"run {self.dir} is being written by a running `pipe train`; "
                                   "wait for it or stop it before resuming")
            (self.dir / INTERRUPTED).unlink(missing_ok=True)  # running again; a new stop writes it again
            return
        k = 1
        while unique and self.dir.exists():
            k += 1
            self.dir = paths.run_dir(f"{name}-{k}", runs)
        taken = PipeError(f"run folder {self.dir} already exists; pass another --name or remove it")
        if self.dir.exists() and any(p.name != RUN_LOCK for p in self.dir.iterdir()):
            raise taken
        real_folder(self.dir, create=True)
        # One writer per name: the first train holds this flock until it ends (the kernel drops
        # it when the process dies); a second train of the same name refuses instead of mixing.
        self._lock: int | None = hold_lock(self.dir / RUN_LOCK, f"run folder {self.dir} is being written by another "
                                           "`pipe train` of the same name; pass another --name")
        if any(p.name != RUN_LOCK for p in self.dir.iterdir()):  # it finished between the check and the lock
            os.close(self._lock)
            raise taken

    @property
    def model_dir(self) -> Path:
        return real_folder(self.dir / MODEL_DIR, create=True)

    def save_model(self, head: Any) -> Path:
        """`head.save` into a temp folder beside `model/`, each file fsynced, then renamed into
        `model/` one by one: a full disk or a kill never leaves a truncated model.pt in `model/`
        (the temp folder goes, now or by the next command's `remove_stale_temps`)."""
        tmp = self.dir / f".tmp-{os.getpid()}-{MODEL_DIR}"
        remove_stale_temps(self.dir)
        if os.path.lexists(tmp):
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
        try:
            head.save(real_folder(tmp, create=True))
            for f in sorted(tmp.iterdir()):
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            for f in sorted(tmp.iterdir()):
                os.replace(f, self.model_dir / f.name)
        except OSError as e:
            if e.filename is None:
                e.filename = str(self.model_dir)
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.model_dir

    def checkpoint_path(self, repeat: int) -> Path:
        return self.dir / CHECKPOINT_DIR / f"repeat-{repeat}.pt"

    def remove_checkpoints(self) -> None:
        """The finished run needs no resumable state."""
        shutil.rmtree(self.dir / CHECKPOINT_DIR, ignore_errors=True)

    def close(self) -> None:
        """Release the folder's lock (the kernel does it when the process ends)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def write_config(self, config: dict[str, Any]) -> None:
        _write_json(self.dir / CONFIG, config)

    def update_config(self, changes: dict[str, Any]) -> None:
        """config.json with `changes` merged in (what the run learned while fitting: never improved)."""
        _write_json(self.dir / CONFIG, {**json.loads((self.dir / CONFIG).read_bytes()), **changes})

    def add_notes(self, notes: list[str], **updates: Any) -> None:
        """Append `notes` to config.json's notes (found during training; a resumed repeat's are
        there once), with other top-level updates."""
        old = json.loads((self.dir / CONFIG).read_bytes()).get("notes", [])
        self.update_config({**updates, "notes": old + [n for n in notes if n not in old]})

    def log(self, event: dict[str, Any]) -> None:
        """Append one line to train_log.jsonl (flushed at once, so a crashed run keeps its log)."""
        append_line(self.dir / TRAIN_LOG, json.dumps(json_safe({"time": now_utc(), **event}), allow_nan=False))

    def write_predictions(self, frames: pl.DataFrame | Iterable[pl.DataFrame]) -> None:
        """post_id, split, then the task's columns (regression: y, yhat): the frames (a task's
        `prediction_chunks`) streamed to the file, one row group each (bounded memory)."""
        atomic_write_parquet(self.dir / PREDICTIONS, frames)

    def write_table(self, name: str, df: pl.DataFrame) -> None:
        """A task's extra table, e.g. the ranking candidates every head is judged on."""
        atomic_write_bytes(self.dir / f"{name}.parquet", parquet_bytes(df))

    def mark_interrupted(self, reason: str) -> None:
        """The run stopped before metrics.json (Ctrl-C, SIGTERM, an error): say so, and why. Best
        effort: on a full disk nothing can be written, and the run reads as failed anyway (`Run.status`)."""
        try:
            _write_json(self.dir / INTERRUPTED, {"time": now_utc(), "reason": reason})
            self.log({"event": "interrupted", "reason": reason})
        except OSError:
            pass

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        _write_json(self.dir / METRICS, metrics)


@dataclass
class Run:
    """A finished or running run, as `pipe evaluate` and `pipe score` read it."""

    dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any] | None  # None while running or after a crash

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def status(self) -> str:
        """done (metrics written), interrupted (stopped early, see interrupted.json), running (its
        train still holds the folder's lock) or failed (it died without a word: killed, a full disk)."""
        if self.metrics is not None:
            return "done"
        if (self.dir / INTERRUPTED).exists():
            return "interrupted"
        return "running" if _writer_alive(self.dir) else "failed"

    @property
    def task(self) -> str:
        """The run's task; runs from before tasks existed are regression."""
        t = self.config.get("task")
        return t.get("name", "regression") if isinstance(t, dict) else "regression"

    @property
    def head(self) -> str:
        return self.config["head"]

    @property
    def task_described(self) -> dict[str, Any]:
        """What config.json records of the task (`Task.restore` reads it). A run from before
        tasks owned their settings kept them in the head's config: they are taken from there."""
        from pipeline.core.config import field_types
        from pipeline.train import tasks

        t = dict(self.config.get("task") or {}) if isinstance(self.config.get("task"), dict) else {}
        if "config" not in t:
            fields = field_types(tasks.get(self.task).Config)
            t["config"] = {k: v for k, v in (self.config.get("config") or {}).items() if k in fields}
        return t

    @property
    def stores(self) -> dict[str, str]:
        """role -> extractor id the run read."""
        return {role: r["extractor_id"] for role, r in self.config.get("stores", {}).items()}

    def store_changes(self, cache: str | Path | None = None) -> list[str]:
        """One line per role whose store changed or went since this run trained on it (its
        recorded manifest digest differs): predictions made now may differ from the run's."""
        from pipeline.store import Manifest

        root = cache if cache is not None else self.config.get("cache")
        out = []
        for role, rec in self.config.get("stores", {}).items():
            want = rec.get("manifest_sha256") if isinstance(rec, dict) else None
            if want is None:  # a run from before digests were recorded: nothing to compare
                continue
            where = f"store {rec.get('extractor_id')} of dataset {self.config.get('dataset')!r}"
            try:
                got = Manifest.load(paths.store_dir(self.config["dataset"], rec["extractor_id"], root)).digest
            except PipeError:
                got = None
            if got != want:
                out.append(f"warning: run {self.name}: {role}: {where} "
                           + ("is gone" if got is None else "changed (re-extracted or re-ingested)")
                           + " since the run trained on it; predictions now may differ from its predictions.parquet")
        return out

    def load_head(self) -> Any:
        import heads

        model = self.dir / MODEL_DIR
        if not model.is_dir():
            raise PipeError(f"run {self.dir} has no saved model ({MODEL_DIR}/); did training finish?")
        cls = heads.get(self.head)
        for f in sorted(model.glob("*.json")):  # name the damaged file when it is a JSON one
            try:
                json.loads(f.read_bytes())
            except (OSError, ValueError) as e:
                raise IntegrityError(f"{f}: unreadable ({type(e).__name__}: {e}); the run's model is damaged: "
                                     "train the run again") from None
        try:
            return cls.load(model)
        except PipeError:
            raise
        except Exception as e:  # torch/pickle/zip/json errors from a damaged model file
            files = ", ".join(p.name for p in sorted(model.iterdir()) if p.suffix != ".json") or "its files"
            raise IntegrityError(f"{model}: cannot load the saved model ({files}: {type(e).__name__}: "
                                 f"{str(e)[:200]}); the file is damaged or truncated: train the run again") from None

    @property
    def repeats(self) -> list[dict[str, Any]]:
        """Each finished repeat's record in seed order (`repeat`, `seed`, `valid` and `test`
        metrics): metrics.json's `repeats`, or, where those lack their metrics, the log's
        `repeat_end` events; a repeat without a recorded seed gets config.json's `seeds[k]`."""
        recorded = list((self.metrics or {}).get("repeats") or [])
        if not recorded or not all(isinstance(r, dict) and isinstance(r.get("test"), dict) for r in recorded):
            logged = finished_repeats(self.dir)
            recorded = [logged[k] for k in sorted(logged)] if logged else recorded
        seeds = self.config.get("seeds") or []
        return [{**r, "seed": r.get("seed", seeds[k] if k < len(seeds) else None)} for k, r in enumerate(recorded)
                if isinstance(r, dict)]

    def predictions(self, columns: Iterable[str] | None = None) -> pl.DataFrame:
        """predictions.parquet, or only those of `columns` it has (a report reads a few narrow
        columns of what can be millions of wide rows)."""
        p = self.dir / PREDICTIONS
        try:
            if columns is None:
                return pl.read_parquet(p)
            lazy = pl.scan_parquet(p)
            have = lazy.collect_schema().names()
            return lazy.select([c for c in dict.fromkeys(columns) if c in have]).collect()
        except Exception as e:  # polars raises several types for a damaged file
            raise IntegrityError(f"{p}: unreadable ({type(e).__name__}); train the run again") from None


def _writer_alive(directory: Path) -> bool:
    """Whether a train holds the run folder's lock (a folder without one, from before it existed: assumed so)."""
    try:
        fd = os.open(directory / RUN_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def finished_repeats(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Repeat -> its metrics, for every repeat the log says ended (a torn last line is skipped)."""
    done: dict[int, dict[str, Any]] = {}
    log = run_dir / TRAIN_LOG
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("event") == "repeat_end":
            done[e["repeat"]] = {k: v for k, v in e.items() if k not in ("event", "time")}
    return done


def find_run(ref: str | Path, runs: str | Path | None = None) -> Path:
    """A run by path, or by name under the runs root."""
    p = Path(ref)
    for cand in (p, paths.runs_root(runs) / p):
        if (cand / CONFIG).is_file():
            return cand
    raise PipeError(f"no run at {ref!r} (looked for {CONFIG} in {p} and in {paths.runs_root(runs) / p})"
                    f"{did_you_mean(p.name, paths.run_names(runs))}")


def load_run(ref: str | Path, runs: str | Path | None = None) -> Run:
    d = find_run(ref, runs)
    config = _read_run_json(d / CONFIG)
    if not isinstance(config, dict) or not isinstance(config.get("head"), str):
        raise IntegrityError(f"{d / CONFIG}: not a run config (no head); the run is damaged: train it again")
    metrics = _read_run_json(d / METRICS) if (d / METRICS).exists() else None
    if metrics is not None and not isinstance(metrics, dict):
        raise IntegrityError(f"{d / METRICS}: not a metrics object; the run is damaged: train it again")
    return Run(d, config, metrics)


def _read_run_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise IntegrityError(f"{path}: unreadable ({type(e).__name__}: {e}); the run is damaged: train it again") from None
