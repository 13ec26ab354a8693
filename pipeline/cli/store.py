"""`pipe store ls|verify|repair|rm`: inspect, check, repair and remove feature stores."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from pipeline.cli.app import CONTEXT, CacheOpt, JsonOpt, app, console, friendly, print_json, results_console
from pipeline.core import paths
from pipeline.core.errors import PipeError
from pipeline.core.terminal import SafeConsole

store_app = typer.Typer(help="Inspect, verify, repair and remove feature stores.", no_args_is_help=True, rich_markup_mode=None,
                        context_settings=CONTEXT)
app.add_typer(store_app, name="store")
DatasetOpt = typer.Option(None, "--dataset", help="Only this dataset.", show_default="every dataset")
ExtractorOpt = typer.Option(None, "--extractor", help="Only this store: extractor id or unique prefix.",
                            show_default="every store")
OneDatasetOpt = typer.Option(..., "--dataset", help="Dataset name.")
OneStoreOpt = typer.Option(..., "--extractor", help="Extractor id or unique prefix.")


def _selected(dataset: Optional[str], extractor: Optional[str], cache: Optional[Path]) -> list[tuple[str, Path]]:
    from pipeline.store import list_stores, resolve_store

    root = paths.cache_root(cache)
    datasets = [dataset] if dataset else sorted(
        p.name for p in root.iterdir() if p.is_dir() and paths.NAME_RE.fullmatch(p.name)) if root.exists() else []
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
    dataset: Optional[str] = DatasetOpt,
    extractor: Optional[str] = ExtractorOpt,
    as_json: bool = JsonOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """List stores with their shape, rows, shards and failures."""
    from pipeline.cli.tables import fitted_tables
    from pipeline.store import FeatureStore, read_failures

    rows, damaged = [], 0
    for ds, d in _selected(dataset, extractor, cache):
        try:
            st = FeatureStore(d)
        except PipeError as e:  # one damaged store is reported, the others still listed
            SafeConsole(stderr=True).print(f"[red]bad:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            damaged += 1
            continue
        rows.append({"dataset": ds, "extractor_id": st.extractor_id, "kind": st.spec.kind, "shape": list(st.spec.shape),
                     "dtype": st.spec.dtype, "posts": len(st), "shards": len(st.manifest.shards),
                     "failures": read_failures(d).height, "path": str(d)})
    if as_json:
        return print_json(rows)
    out = results_console()
    cells = [([r["dataset"], r["extractor_id"]], [r["kind"], "x".join(map(str, r["shape"])), r["dtype"],
                                                  *(str(r[k]) for k in ("posts", "shards", "failures"))]) for r in rows]
    for t in fitted_tables("feature stores", ["dataset", "extractor id"],  # ids fold, never cut
                           ["kind", "shape", "dtype", "posts", "shards", "failures"], cells, out.width):
        out.print(t)
    if damaged:
        raise typer.Exit(1)


@store_app.command("verify")
@friendly
def verify(
    dataset: Optional[str] = DatasetOpt,
    extractor: Optional[str] = ExtractorOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Recompute every shard's sha256; exit 1 naming each missing or corrupted shard."""
    from pipeline.store import verify_store

    problems: list[str] = []
    stores = _selected(dataset, extractor, cache)
    for _, d in stores:
        problems += verify_store(d)
    for p in problems:  # findings, so printed even with --quiet
        SafeConsole(stderr=True).print(f"[red]bad:[/] {escape(p)}", highlight=False, soft_wrap=True)
    if problems:
        SafeConsole(stderr=True).print("`pipe store repair --dataset D --extractor ID` sets bad shards aside; the next "
                                   "`pipe extract` redoes their posts", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{len(stores)} store(s) verified, all shards intact")


@store_app.command("rm")
@friendly
def rm(
    dataset: str = OneDatasetOpt,
    extractor: str = OneStoreOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Remove one store (waits for no writer: refuses while an extraction holds its lock)."""
    from pipeline.store import resolve_store, store_lock
    from pipeline.store.integrity import remove_tree

    d = resolve_store(dataset, extractor, cache)  # checked names, inside the cache (a damaged store can go too)
    with store_lock(d, wait=False):
        remove_tree(d, paths.cache_root(cache))
    console.print(f"removed {d}")


@store_app.command("repair")
@friendly
def repair(
    dataset: str = OneDatasetOpt,
    extractor: str = OneStoreOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Move every shard that fails its check (checksum, spec, rows) to quarantine/ and drop it from the
    manifest, so the next `pipe extract` redoes its posts. Refuses while an extraction holds the lock."""
    from pipeline.store import repair_store, resolve_store

    d = resolve_store(dataset, extractor, cache)
    done = repair_store(d)
    for line in done:
        console.print(escape(line), highlight=False, soft_wrap=True)
    if not done:
        console.print(f"{d}: every shard intact, nothing to repair", highlight=False)
    elif any("cannot be repaired" in line for line in done):
        raise typer.Exit(1)
    else:
        console.print(f"now run `pipe extract --dataset {dataset} ...` with the store's backbone to redo the posts",
                      highlight=False, soft_wrap=True)
