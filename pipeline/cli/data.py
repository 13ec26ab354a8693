"""`pipe synth` and `pipe ingest`: make or bring posts into the posts contract."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.app import FORMAT_HELP, CacheOpt, app, console, friendly


@app.command("synth")
@friendly
def synth_cmd(
    out: Path = typer.Argument(..., help="Folder to write posts.parquet, images/, truth.parquet and signals.json into."),
    posts: Optional[int] = typer.Option(None, "--posts", help="Number of posts.", show_default="1500"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Side of the square JPEGs in pixels.",
                                            show_default="64"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed; the same seed gives the same files.",
                                      show_default="0"),
    users: Optional[int] = typer.Option(None, "--users", help="Exactly this many users, each with 10 posts or more.",
                                        show_default="24, fewer below 960 posts: one per 40"),
    text_words: Optional[str] = typer.Option(None, "--text-words", help="Filler words per post: N or LOW-HIGH.",
                                             show_default="4-7"),
    vocab: Optional[int] = typer.Option(None, "--vocab", help="Filler vocabulary size (pseudo-words beyond 60).",
                                        show_default="~15 uses per word, at most 60"),
    text_signal: Optional[str] = typer.Option(None, "--text-signal", help="word: one lucky word per user; topic: "
                                              "any of the 4 words of a lucky topic.", show_default="word"),
    modality_signal: Optional[str] = typer.Option(None, "--modality-signal", help="both: a user's lucky object "
                                                  "and word both count; mixed: half the users' signal is in the "
                                                  "image only, half in the text only.", show_default="both"),
    shape: Optional[str] = typer.Option(None, "--shape", help="ranking: default or followee (more users and "
                                        "tweets, followee-driven tastes); embedding: default or noisy (noisier "
                                        "tags, 12 classes).", show_default="default"),
    task: str = typer.Option("regression", "--task", help="regression (posts with a score), ranking (tweets, "
                             "interactions.parquet, follows.parquet: pipeline/data/synth_ranking.py), embedding "
                             "(posts with labels and tags: pipeline/data/synth_embedding.py) or sequence (scores "
                             "that depend on the posts just before: pipeline/data/synth_sequence.py)."),
) -> None:
    """Write a synthetic dataset with planted signals (see pipeline/data/synth.py for the design)."""
    from pipeline.data.synth_kinds import synth_kind

    text = {"text_words": text_words, "vocab": vocab, "text_signal": text_signal, "modality_signal": modality_signal,
            "shape": shape}
    kind = synth_kind(task, users, text)
    kw = {k: v for k, v in {"image_size": image_size, "seed": seed}.items() if v is not None}
    t0 = time.perf_counter()
    path, holds = kind.make(out, posts if posts is not None else kind.default_posts(shape), users, kw, text)
    console.print(f"wrote {path} ({holds}, images under {out / 'images'}) in {time.perf_counter() - t0:.1f}s; "
                  f"planted signals: {out / 'signals.json'}", highlight=False, soft_wrap=True)


@app.command("ingest")
@friendly
def ingest_cmd(
    path: Path = typer.Argument(..., help="Posts file (.parquet, .csv, .jsonl/.json) or an SMPD folder."),
    name: str = typer.Option(..., "--name", help="Dataset name: the table goes to <cache>/NAME/posts.parquet."),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Ingest the valid rows; write the others with "
                                      "reasons to <cache>/NAME/rejected.parquet."),
    min_words: Optional[int] = typer.Option(None, "--min-words", help="Drop posts whose title + text has fewer "
                                            "than N words (UHAN used 5).", show_default="off"),
    unlabelled: bool = typer.Option(False, "--unlabelled", help="Accept posts without a score (posts to score, "
                                    "the SMPD test split)."),
    split: Optional[str] = typer.Option(None, "--split", help="SMPD only: train or test.",
                                        show_default="train when present"),
    encoding: Optional[str] = typer.Option(None, "--encoding", help="Text encoding of a CSV/JSONL file (latin-1, "
                                           "cp1252, ...); without it, bytes that are not UTF-8 are refused naming the line.",
                                           show_default="utf-8"),
    interactions: Optional[Path] = typer.Option(None, "--interactions", help="Ranking side table: user_id, post_id, at "
                                                "[, kind] (retweets), stored as <cache>/NAME/interactions.parquet.",
                                                show_default="none"),
    follows: Optional[Path] = typer.Option(None, "--follows", help="Ranking side table: user_id, followee_id, stored as "
                                           "<cache>/NAME/follows.parquet.", show_default="none"),
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Validate a posts file and write the dataset's posts table (replacing an older one)."""
    from pipeline import api

    rep = api.ingest(path, name, fmt=fmt, cache=cache, skip_invalid=skip_invalid, min_words=min_words,
                     unlabelled=unlabelled, split=split, encoding=encoding, interactions=interactions, follows=follows)
    console.print(f"ingested {rep.rows} posts from {path} into {rep.path}", highlight=False, soft_wrap=True)
    for kind, rows in (rep.side or {}).items():
        console.print(f"{kind}: {rows} rows into {rep.path.parent / (kind + '.parquet')}", highlight=False, soft_wrap=True)
    for kind, rej in (rep.side_rejected or {}).items():
        console.print(f"{kind}: rejected rows with reasons in {rej}", highlight=False, soft_wrap=True)
    for kind in rep.side_removed or []:
        console.print(f"removed the previous {kind} table (not given again)", highlight=False, soft_wrap=True)
    if rep.set_aside is not None:
        console.print(f"the previous table could not be read; it was set aside as {rep.set_aside}", highlight=False,
                      soft_wrap=True)
    if rep.replaced is not None:
        r = rep.replaced
        console.print(f"replaced the previous table: {r['added']} added, {r['removed']} removed, {r['changed']} changed "
                      "(feature stores keep their rows for unchanged posts)", highlight=False, soft_wrap=True)
    if rep.rejected_path is not None:
        console.print(f"rejected {rep.rejected} invalid row(s); reasons in {rep.rejected_path}", highlight=False, soft_wrap=True)
    if min_words is not None:
        console.print(f"dropped {rep.dropped_min_words} post(s) with fewer than {min_words} words", highlight=False, soft_wrap=True)
