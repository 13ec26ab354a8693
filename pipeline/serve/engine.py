"""One loaded run: its head and exact extractors, loaded once, and the `pipe score` path per request.

A request's drafts become a posts table through the posts contract (`normalise`, as
ingest validates a file; sorted by time and id, as `load_posts` returns it), their
features come from the run's own extractors (`extractor_from_store`: config, weights and
vocabulary of the store the run read) in memory, and then the very functions of
`pipe score` run: `head_data` (task config restored, side tables, History),
`missing_images`, `unseen_users` and `score_table`. The service's scores are therefore
`pipe score`'s for the same posts (tests/test_serve.py checks a difference of 0).

Two threads of work: `prepare` (image limits, decoding, preprocessing, the upload file)
runs in a pool beside the event loop; `score`, `explain` and `search` run in the one
model thread (the batcher's), so the head and the extractors are never used concurrently.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.core.errors import ImageError, PipeError, PostsError
from pipeline.data.contract import normalise, post_text
from pipeline.data.raw import LINE, RawPosts, json_column
from pipeline.evaluate.report import run_posts, user_training_stats
from pipeline.extract import extractor_from_store
from pipeline.extract.images import fingerprint_bytes, fingerprint_text
from pipeline.extract.inline import image_features, preprocess_image, text_features
from pipeline.extract.options import RunOptions
from pipeline.run.rundir import load_run
from pipeline.score import (Scoring, head_data, missing_images, run_context, score_table, open_training_store,
                            training_users, unseen_users)
from pipeline.serve.features import FeatureCache, MemoryStore
from pipeline.serve.uploads import ImageRefused, Limits, Uploads, check_image
from pipeline.store import FeatureStore
from pipeline.train import tasks
from pipeline.train.data import RunSettings

POST_FIELDS = ("post_id", "user_id", "title", "text", "posted_at")  # what a draft is; extra scalar fields pass on


@dataclass
class Draft:
    """One post of a request, as received; `prepare` fills the image's part."""

    fields: dict[str, Any]  # post_id, user_id, title, text, posted_at and any other posts-contract column
    image: bytes | None = None  # the image's bytes (multipart or base64), never a path
    error: ImageRefused | None = None  # why the image is not used (the post is scored without it)
    fingerprint: str | None = None  # blake2b of the image bytes
    path: Path | None = None  # the image's file under the uploads folder
    inputs: dict[str, Any] = field(default_factory=dict)  # role -> preprocessed image, when not cached

    @property
    def post_id(self) -> str:
        return str(self.fields.get("post_id"))


class Engine:
    """A run loaded for serving."""

    def __init__(self, run_ref: str | Path, runs: str | Path | None = None, cache: str | Path | None = None,
                 device: str = "auto", cache_bytes: int = 256 * 2**20, uploads: Uploads | None = None,
                 limits: Limits = Limits()) -> None:
        self.run = load_run(run_ref, runs)
        if self.run.metrics is None:
            raise PipeError(f"run {self.run.dir} has no metrics.json: it did not finish, so it has no final model")
        self.cache = cache
        self.limits = limits
        self.device = RunOptions(device=device).resolved_device()
        self.head = self.run.load_head()
        self.head.settings = RunSettings(device=device)
        self.ctx = run_context(self.run, cache)
        self.task_cls = tasks.get(self.run.task)
        self.base: dict[str, FeatureStore] = {}
        self.extractors: dict[str, Any] = {}
        for role, eid in self.run.stores.items():
            self.base[role] = open_training_store(self.run, eid, cache)  # read-only outside --cache
            d = self.base[role].directory
            ex = extractor_from_store(d)
            ex.load(self.device if ex.uses_torch else "cpu")
            self.extractors[role] = ex
        self.train_users = training_users(self.run, cache)
        posts = run_posts(self.run, cache)
        stats = user_training_stats(self.run.predictions(), posts) if posts is not None else pl.DataFrame(
            schema={"user_id": pl.Utf8, "n_train": pl.UInt32, "train_mean": pl.Float64})
        self.user_stats = {r["user_id"]: (int(r["n_train"]), r["train_mean"]) for r in stats.to_dicts()}
        self.features = FeatureCache(cache_bytes)
        self.uploads = uploads if uploads is not None else Uploads(cache)

    @property
    def name(self) -> str:
        return self.run.name

    def image_roles(self) -> list[str]:
        return [r for r, ex in self.extractors.items() if ex.modality == "image"]

    def describe(self) -> dict[str, Any]:
        """What `/runs` says of the run."""
        return {"name": self.run.name, "head": self.run.head, "task": self.run.task,
                "dataset": self.run.config.get("dataset"), "metrics": (self.run.metrics or {}).get("test"),
                "extractors": {r: ex.extractor_id() for r, ex in self.extractors.items()},
                "reads_images": bool(self.image_roles()), "rank": self.task_cls.ranks_posts,
                "search": self.task_cls.searchable, "users": len(self.user_stats)}

    def users(self, query: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """Users of the training part (most posts first), whose id contains `query`."""
        rows = [(u, n, m) for u, (n, m) in self.user_stats.items() if query.lower() in u.lower()]
        rows.sort(key=lambda r: (-r[1], r[0]))
        return [{"user_id": u, "n_train": n, "train_mean": m} for u, n, m in rows[:limit]]

    def user_mean(self, user: str) -> float | None:
        st = self.user_stats.get(user)
        return None if st is None or st[1] is None else float(st[1])

    # -- beside the event loop: images --------------------------------------------------
    def prepare(self, drafts: list[Draft]) -> None:
        """Check, fingerprint, decode and preprocess each draft's image (unless its features are
        cached) and keep its file; a bad image refuses only its own draft."""
        for d in drafts:
            if d.image is None:
                continue
            try:
                check_image(d.image, self.limits)
                d.fingerprint = fingerprint_bytes(d.image)
                for role in self.image_roles():
                    ex = self.extractors[role]
                    if not self.features.has((ex.extractor_id(), d.fingerprint)):
                        d.inputs[role] = preprocess_image(ex, d.image)
                d.path = self.uploads.save(d.image, d.fingerprint)
            except ImageRefused as e:
                d.error = e
            except ImageError as e:
                d.error = ImageRefused(415, e.reason)

    # -- in the model thread ------------------------------------------------------------
    def posts(self, drafts: list[Draft]) -> pl.DataFrame:
        """The drafts as a posts-contract table, sorted as `load_posts` sorts; PostsError naming
        `posts[i].field` for each problem."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        rows = []
        for d in drafts:
            r = {"post_id": None, "user_id": None, **d.fields}  # a missing field is flagged per post
            if r.get("posted_at") in (None, ""):
                r["posted_at"] = now.isoformat()
            r["image"] = str(d.path) if d.path is not None and d.error is None else None
            rows.append(r)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        df = pl.DataFrame({k: json_column([r.get(k) for r in rows]) for k in keys}).with_row_index(LINE)
        raw = RawPosts(df.with_columns(pl.col(LINE).cast(pl.Int64)), Path("request"), self.uploads.dir, "post")
        try:
            table, problems = normalise(raw, unlabelled=True)
        except PostsError as e:
            raise PostsError(str(e).replace("request: ", "")) from None
        if problems.height:
            raise PostsError("; ".join(f"posts[{r['line']}].{r['column']}: {r['reason']}"
                                       + (f" ({r['value']!r})" if r["value"] is not None else "")
                                       for r in problems.head(10).to_dicts()))
        return table.sort("posted_at", "post_id")

    def stores(self, posts: pl.DataFrame, drafts: list[Draft]) -> dict[str, MemoryStore]:
        """Per role, the rows of these posts: from the cache, else extracted now (one forward per role)."""
        by_id = {d.post_id: d for d in drafts}
        texts = post_text(posts)
        out = {}
        for role, ex in self.extractors.items():
            eid = ex.extractor_id()
            if ex.modality == "image":
                keyed = [(p, by_id[p].fingerprint) for p in posts["post_id"].to_list()
                         if by_id[p].fingerprint is not None and by_id[p].error is None]
            else:
                keyed = [(p, fingerprint_text(t)) for p, t in zip(posts["post_id"].to_list(), texts)]
            rows = {p: self.features.get((eid, k)) for p, k in keyed}
            todo = {}  # fingerprint -> (post ids, input): a draft sent twice in a request is computed once
            for (p, k), t in zip(keyed, texts if ex.modality == "text" else [None] * len(keyed)):
                if rows[p] is None:
                    todo.setdefault(k, ([], by_id[p].inputs.get(role) if t is None else t))[0].append(p)
            if ex.modality == "image" and any(x is None for _, x in todo.values()):  # evicted since prepare
                for k, (ids, x) in list(todo.items()):
                    if x is None:
                        todo[k] = (ids, preprocess_image(ex, by_id[ids[0]].image))
            inputs = [x for _, x in todo.values()]
            feats = image_features(ex, inputs, self.device) if ex.modality == "image" else \
                text_features(ex, inputs, self.device)
            for (k, (ids, _)), row in zip(todo.items(), feats):
                self.features.put((eid, k), row)
                for p in ids:
                    rows[p] = row
            out[role] = MemoryStore(self.base[role], {p: rows[p] for p, _ in keyed})
        return out

    def scoring(self, drafts: list[Draft]) -> Scoring:
        """The drafts made ready for the head, as `pipe score`'s `prepare` makes a file's posts."""
        posts = self.posts(drafts)
        stores = self.stores(posts, drafts)
        task, data = head_data(self.run, posts, stores, self.cache, ctx=self.ctx)
        return Scoring(self.run, self.head, task, data, "serve", {}, missing_images(data.posts, stores),
                       unseen_users(self.head, self.run, data, self.cache, self.train_users))

    def score(self, drafts: list[Draft]) -> list[dict[str, Any]]:
        """`pipe score`'s rows for the drafts, in the drafts' order, with the user's training mean,
        the gain over it (tasks with a score per post) and why an image was not used."""
        table, _ = score_table(self.scoring(drafts))
        per_post = self.task_cls.ranks_posts
        order = {d.post_id: i for i, d in enumerate(drafts)}
        errors = {d.post_id: d.error.reason for d in drafts if d.error is not None}
        rows = sorted(table.to_dicts(), key=lambda r: order.get(r["post_id"], len(order)))
        for r in rows:
            if per_post:
                mean = None if r.get("unseen_user") else self.user_mean(self._user(drafts, r["post_id"]))
                r["user_mean"] = mean
                r["gain"] = r["score"] - mean if mean is not None else None
            if r["post_id"] in errors:
                r["image_error"] = errors[r["post_id"]]
        return rows

    @staticmethod
    def _user(drafts: list[Draft], post_id: str) -> str:
        return next(str(d.fields.get("user_id")) for d in drafts if d.post_id == post_id)

    def explain(self, drafts: list[Draft]) -> list[tuple[Any, dict[str, bytes]]]:
        """The head's attention per draft (`Head.explain`) with its PNGs; NotApplicable without attention."""
        from pipeline.explain import explanations

        s = self.scoring(drafts)
        return [(e, pngs) for e, _, pngs in explanations(self.run, self.head, s.data, s.unseen, self.cache)]

    def search(self, tag: str, k: int) -> list[dict[str, Any]]:
        """`pipe search` over the run's own dataset (embedding runs with tags; NotApplicable otherwise)."""
        from pipeline.search import search

        res = search(self.run.dir, self.run.config["dataset"], tag, k=k, cache=self.run.config.get("cache") or self.cache,
                     device=self.device)
        return res.table.drop("image").to_dicts()  # no server path leaves the service


def split_rows(rows: list[dict[str, Any]], groups: list[list[Draft]]) -> list[list[dict[str, Any]]]:
    """Rows of one pass over several requests' drafts, back to each request."""
    owner = {d.post_id: i for i, g in enumerate(groups) for d in g}
    out: list[list[dict[str, Any]]] = [[] for _ in groups]
    for r in rows:
        out[owner[r["post_id"]]].append(r)
    return out


def as_array(x: Any) -> Any:
    """JSON-ready: arrays to lists."""
    return x.tolist() if isinstance(x, np.ndarray) else x
