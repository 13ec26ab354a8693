"""`pipe store ls|verify|rm`: inspect and check feature stores."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.app import CacheOpt, app, console, friendly
from pipeline.core import paths
from pipeline.store import FeatureStore, Manifest, list_stores, read_failures, resolve_store, store_lock, verify_store

store_app = typer.Typer(help="Inspect, verify and remove feature stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")


def _selected(dataset: Optional[str], extractor: Optional[str], cache: Optional[Path]) -> list[tuple[str, Path]]:
    root = paths.cache_root(cache)
    datasets = [dataset] if dataset else sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    out = []
    for ds in datasets:
        if extractor:
            out.append((ds, resolve_store(ds, extractor, cache)))
        else:
            out.extend((ds, paths.features_dir(ds, cache) / i) for i in list_stores(ds, cache))
    return out


@store_app.command("ls")
@friendly
def ls(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only this dataset."),
    extractor: Optional[str] = typer.Option(None, "--extractor", help="Extractor id or unique prefix."),
    cache: Optional[Path] = CacheOpt,
) -> None:
    """List stores with their shape, rows, shards and failures."""
    t = Table("dataset", "extractor id", "kind", "shape", "dtype", "posts", "shards", "failures")
    for ds, d in _selected(dataset, extractor, cache):
        st = FeatureStore(d)
        t.add_row(ds, st.extractor_id, st.spec.kind, "x".join(map(str, st.spec.shape)), st.spec.dtype,
                  str(len(st)), str(len(st.manifest.shards)), str(read_failures(d).height))
    Console().print(t)


@store_app.command("verify")
@friendly
def verify(
    dataset: Optional[str] = typer.Option(None, "--dataset"),
    extractor: Optional[str] = typer.Option(None, "--extractor"),
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Recompute every shard's sha256; exit 1 naming each missing or corrupted shard."""
    problems: list[str] = []
    stores = _selected(dataset, extractor, cache)
    for _, d in stores:
        problems += verify_store(d)
    for p in problems:
        console.print(f"[red]bad:[/] {p}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(stores)} store(s) verified, all shards intact")


@store_app.command("rm")
@friendly
def rm(
    dataset: str = typer.Option(..., "--dataset"),
    extractor: str = typer.Option(..., "--extractor", help="Extractor id or unique prefix."),
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Remove one store (waits for no writer: refuses while an extraction holds its lock)."""
    d = resolve_store(dataset, extractor, cache)
    Manifest.load(d)
    with store_lock(d, wait=False):
        shutil.rmtree(d)
    console.print(f"removed {d}")
