"""`pipe explain`: what a run's model attended to for one post, drawn and kept as numbers.

The head answers through `Head.explain` (pipeline/head/base.py: `Explanation`); this module only
finds the post, reads the user's training statistics and the vocabulary, and draws. A
post of the run's own dataset is read from the run's stores; a post of `--posts FILE` is
ingested and extracted like `pipe score` does (pipeline/score.py `prepare`), so new posts,
unseen users and posts without an image explain the same way. Per post it writes
`<post>.json` (the raw weights, words, prediction, the user's training mean) and PNGs:
`<post>-regions.png` (heat map on the image), `<post>-words.png`, `<post>-modalities.png`
(UHAN's inter-attention) and `<post>-history.png` (a sequence head's earlier posts);
`explain.html` with `html=True`, each post's section linking its own files. `<post>` is
`file_stem(post_id)`: a readable prefix and a hash of the whole id, so ids that differ only in
characters a file name cannot hold (`a/b`, `a b`, non-ASCII) never share files, and a long id
never makes a name the file system refuses.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import numpy as np
import polars as pl

from pipeline.core.errors import NotApplicable, PipeError, StoreError
from pipeline.core.io import atomic_write_bytes, json_safe
from pipeline.core.specs import FIRST_WORD_ID, UNK_ID, VOCAB_FILE, read_token_vocab
from pipeline.data.contract import load_posts
from pipeline.evaluate import plots
from pipeline.evaluate.report import img, note, page, run_posts, user_training_stats
from pipeline.store import FeatureStore
from pipeline.train.data import HeadData
from pipeline.run.rundir import Run, load_run

IMAGE_SIDE = 448  # images are drawn at most this many pixels on a side


@dataclass
class PostExplanation:
    """One post's explanation as written: the head's maps plus what the page shows beside them."""

    post_id: str
    user_id: str
    prediction: Any
    user_mean: float | None  # the user's mean target in the training part; None when unseen
    user_posts: int  # the user's posts in the training part
    explanation: dict[str, Any]  # Explanation.to_json(), words resolved
    files: dict[str, str] = field(default_factory=dict)  # what -> file name in the output folder


def _vocab(data: HeadData) -> list[str] | None:
    store = data.stores.get("text")
    try:
        return read_token_vocab(store.artifact_path(VOCAB_FILE))["words"] if store is not None else None
    except (StoreError, ValueError, OSError):
        return None


def _word(vocab: list[str] | None, token: int) -> str:
    if token == UNK_ID:
        return "<unk>"
    k = token - FIRST_WORD_ID
    return vocab[k] if vocab is not None and 0 <= k < len(vocab) else f"#{token}"


def _image(path: Any) -> np.ndarray | None:
    """The post's image as RGB, at most IMAGE_SIDE on a side; None when there is none or it
    cannot be read (the map is then drawn on the bare grid)."""
    if not path:
        return None
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
            return np.asarray(im)
    except Exception:  # missing, corrupt, not an image: PIL raises many types
        return None


def file_stem(post_id: str) -> str:
    """The stem of a post's files: up to 40 readable characters, then 12 hex digits of the
    sha256 of the whole id (injective in practice; at most 53 bytes, 68 with `-modalities.png`)."""
    prefix = re.sub(r"[^A-Za-z0-9._-]+", "_", post_id).strip("._-")[:40].rstrip("._-") or "post"
    return f"{prefix}-{hashlib.sha256(post_id.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def draw(e: PostExplanation, row: dict[str, Any], history_posts: pl.DataFrame | None) -> dict[str, bytes]:
    """PNG files of one post's maps, by kind."""
    x, out = e.explanation, {}
    if x.get("regions"):
        out["regions"] = plots.heatmap_on_image(_image(row.get("image")), x["regions"], tuple(x["grid"]),
                                                "attention over image regions")
    if x.get("words"):
        out["words"] = plots.words([(w, float(v)) for w, v, _ in x["words"]], "attention over words")
    if x.get("modalities"):
        m = x["modalities"]
        out["modalities"] = plots.bars(list(m), list(m.values()), "inter-attention (image vs text)", "weight")
    if x.get("history"):
        rows = {} if history_posts is None else {r["post_id"]: r for r in history_posts.to_dicts()}
        out["history"] = plots.thumbnails([(_image(rows.get(p, {}).get("image")), p, float(w)) for p, w in x["history"]],
                                          "attention over the user's earlier posts")
    return out


def explanations(run: Run, head: Any, data: HeadData, unseen: np.ndarray, cache: str | Path | None
                 ) -> list[tuple[PostExplanation, dict[str, Any], dict[str, bytes]]]:
    """Every post of `data` explained, in memory: (explanation, the post's row, PNGs by kind).
    NotApplicable for a head without attention."""
    exps = head.explain(data)
    if exps is None:
        raise NotApplicable(f"head {run.head!r} exposes no attention to explain (Head.explain); heads with attention: "
                            "uhan, dualatt, and any whose model has details()")
    posts = run_posts(run, cache)
    preds = run.predictions()
    stats = {r["user_id"]: r for r in user_training_stats(preds, posts).to_dicts()} if posts is not None else {}
    vocab = _vocab(data)
    done = []
    for ex, row, new_user in zip(exps, data.posts.to_dicts(), unseen):
        x = ex.to_json()
        if x["words"] is not None:
            x["words"] = [[_word(vocab, t), w, t] for t, w in x["words"]]  # word, weight, token id
        st = None if new_user else stats.get(row["user_id"])
        e = PostExplanation(ex.post_id, row["user_id"], ex.prediction, st["train_mean"] if st else None,
                            st["n_train"] if st else 0, x)
        done.append((e, row, draw(e, row, posts)))
    return done


def explain_data(run: Run, head: Any, data: HeadData, unseen: np.ndarray, out: Path, cache: str | Path | None,
                 html: bool = False, title: str = "") -> list[PostExplanation]:
    """Explain every post of `data`: JSON and PNGs under `out` (and explain.html)."""
    built = explanations(run, head, data, unseen, cache)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for e, _, pngs in built:
        for kind, png in pngs.items():
            e.files[kind] = f"{file_stem(e.post_id)}-{kind}.png"
            atomic_write_bytes(out / e.files[kind], png)
        e.files["json"] = f"{file_stem(e.post_id)}.json"
        atomic_write_bytes(out / e.files["json"], (json.dumps(json_safe(e.__dict__), indent=1) + "\n").encode())
        done.append(e)
    if html:
        atomic_write_bytes(out / "explain.html", page(title or f"pipe explain: {run.name}",
                                                      "".join(post_html(e, out) for e in done)).encode())
    return done


def post_html(e: PostExplanation, folder: Path, heading: str = "") -> str:
    """A post's block of the page: prediction beside the user's training mean, then its maps."""
    import html as h

    pred = f"{e.prediction:.4f}" if isinstance(e.prediction, float) else h.escape(json.dumps(e.prediction))
    mean = (f"the user's training mean {e.user_mean:.4f} over {e.user_posts} posts" if e.user_mean is not None else
            "the user was never seen in training: the prediction rests on the content alone")
    figs = "".join(img((folder / f).read_bytes(), f"{e.post_id}: {k}") for k, f in e.files.items() if k != "json")
    links = " · ".join(f'<a href="{h.escape(quote(f))}">{h.escape(k)}</a>' for k, f in e.files.items())
    return (f"<section><h2>{h.escape(heading or e.post_id)}</h2><p>prediction {pred} · {h.escape(mean)}</p>"
            f'<div class="plots">{figs or note("no attention maps for this post")}</div>'
            f'<p class="files">files: {links}</p></section>')


def explain(run_ref: str | Path, post_ids: list[str], posts_file: str | Path | None = None,
            out: str | Path = "explain", html: bool = False, dataset: str | None = None,
            cache: str | Path | None = None, runs: str | Path | None = None,
            say: Callable[[str], None] = lambda m: None, **extract_options: Any) -> list[PostExplanation]:
    """`pipe explain`: the posts `post_ids` of the run's dataset, or of `posts_file`."""
    from pipeline.score import head_data, open_training_store, prepare, unseen_users

    if not post_ids:
        raise PipeError("name at least one post (--post ID)")
    if posts_file is not None:
        s = prepare(run_ref, posts_file, dataset, cache, runs, say=say, **extract_options)
        run, head, data, unseen = s.run, s.head, s.data, s.unseen
    else:
        run = load_run(run_ref, runs)
        if run.metrics is None:
            raise PipeError(f"run {run.dir} has no metrics.json: it did not finish, so it has no final model")
        head = run.load_head()
        for line in run.store_changes(cache):  # the run's own posts: its predictions.parquet may disagree
            say(line)
        posts = load_posts(run.config["dataset"], run.config.get("cache") or cache)
        posts = posts.filter(pl.col("post_id").is_in(post_ids))  # only these: a history keeps the dataset's
        stores = {r: open_training_store(run, eid, cache) for r, eid in run.stores.items()}
        data = head_data(run, posts, stores, cache)[1]
        unseen = None
    missing = sorted(set(post_ids) - set(data.ids))
    if missing:
        where = posts_file or f"dataset {run.config['dataset']!r}"
        raise PipeError(f"no post {', '.join(missing[:5])} in {where}")
    keep = np.array([p in set(post_ids) for p in data.ids])
    sub = data.subset(keep)
    flags = unseen[keep] if unseen is not None else unseen_users(head, run, sub, cache)
    done = explain_data(run, head, sub, flags, Path(out), cache, html)
    say(f"explained {len(done)} posts of run {run.name} -> {out}")
    return done
