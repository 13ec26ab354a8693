"""One feature table for the classic baselines (SVR, LightGBM), fitted on the training part.

Columns, in order (each block only when used):
- visual: the role's store pooled to a vector (grid -> mean over regions, vector as is),
  then `visual_missing` (1 where the store has no row: no image, or a failed one);
- text: a vector store as is; a tokens store as token statistics (`n_tokens`,
  `unk_frac`) and hashed bag-of-ids counts (id mod `text_buckets`, padding and the
  unknown id left out); then `text_missing`;
- user: each numeric `user_*` column as sign(x)·log1p(|x|) (follower counts are
  heavy-tailed), nulls filled with the training median; `user_mean` (the user's mean
  training score), `user_log_count` (log1p of the user's training posts), `user_unseen`;
- categories (option `categories`, the SMP winners'): the three levels (category,
  subcategory, concept) as codes of the training vocabulary (NaN: unknown; LightGBM
  treats them as categorical) or, with `onehot` (SVR), one-hot columns;
- user history (option `user_history=k`, the SMP winners' leak-free history): the mean
  and count of the user's last k scores strictly before the post, from the History's
  labels, i.e. training posts only (`pipeline/train/windows.py`); the global training
  mean where there is none.

No leakage: every statistic comes from the training part. On the training rows the user
statistics are leave-one-out (the post's own label left out), so a training row looks like
a new post of a known user, which is what the model meets at test time; a user with one
training post then counts as unseen, with the global training mean.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.head.base import Head, HeadData, Role
from pipeline.core.config import config_to_dict
from pipeline.core.errors import PipeError
from pipeline.data.contract import user_feature_columns
from pipeline.train.windows import user_history

LEVELS = ("category", "subcategory", "concept")
# A tree head's feature importances, saved in its model folder at train time: {"kind": "gain",
# "features": [[column name, importance], ...], largest first}. `pipe report` draws them
# from this file alone (no lightgbm import, no model rebuilt).
IMPORTANCES = "importances.json"


def category_vocabulary(posts: pl.DataFrame) -> dict[str, list[str]]:
    """Level -> the values the posts have, as strings, sorted (none for a level they lack)."""
    return {lv: sorted({str(v) for v in posts[lv].drop_nulls().to_list()}) if lv in posts.columns else []
            for lv in LEVELS}


CHUNK = 2048  # posts read from a store at a time: bounds memory for 196x512 grids
RELEASE_ROWS = 65536  # TableRows unmaps its stores after reading this many rows (their pages leave the RSS)


def token_stats(ids: np.ndarray, buckets: int) -> np.ndarray:
    """(n, L) token ids -> (n, 2 + buckets): length, unknown share, hashed id counts."""
    ids = ids.astype(np.int64)
    n = ids.shape[0]
    length = (ids > 0).sum(axis=1)
    unk = (ids == 1).sum(axis=1) / np.maximum(length, 1)
    rows, cols = np.nonzero(ids > 1)
    counts = np.bincount(rows * buckets + ids[rows, cols] % buckets, minlength=n * buckets)
    counts = counts.reshape(n, buckets)  # (n, buckets)
    return np.column_stack([length, unk, counts]).astype(np.float32)


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class TabularFeatures:
    use_visual: bool  # read the `visual` role (when the run has a store for it)
    use_text: bool  # read the `text` role (when the run has a store for it)
    use_user: bool  # add the user columns and the user's training statistics
    text_buckets: int = 64  # hashed bag-of-ids width for a tokens store
    categories: bool = False  # add the three category levels
    onehot: bool = False  # categories as one-hot columns (SVR) instead of codes (LightGBM)
    user_history: int = 0  # k > 0: mean and count of the user's last k earlier training scores
    context: tuple[str, ...] = ()  # numeric posts columns added as they are (hybrid-CNN paper: user_followers, days)
    # -- fitted on the training part --
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> {"kind", "shape"} read at fit time
    global_mean: float = 0.0  # mean training score: the fallback for unseen users
    user_sum: dict[str, float] = field(default_factory=dict)  # user -> sum of training scores
    user_count: dict[str, int] = field(default_factory=dict)  # user -> number of training posts
    user_cols: list[str] = field(default_factory=list)  # numeric user_* columns seen in training
    user_fill: list[float] = field(default_factory=list)  # training median of each (transformed)
    category_values: dict[str, list[str]] = field(default_factory=dict)  # level -> training values, sorted
    names: list[str] = field(default_factory=list)  # column names of the table
    blocks: list[str] = field(default_factory=list)  # block of each column: visual | text | user

    # -- fitting --------------------------------------------------------------------
    def fit(self, train: HeadData) -> "TabularFeatures":
        self.roles = {}
        for role, used in (("visual", self.use_visual), ("text", self.use_text)):
            if used and role in train.stores:
                spec = train.stores[role].spec
                self.roles[role] = {"kind": spec.kind, "shape": list(spec.shape)}
        y = train.y.astype(np.float64)
        self.global_mean = float(y.mean())
        g = (pl.DataFrame({"u": train.posts["user_id"].cast(pl.Utf8), "y": y})
             .group_by("u").agg(pl.col("y").sum().alias("s"), pl.len().alias("n")))
        self.user_sum = dict(zip(g["u"].to_list(), g["s"].to_list()))
        self.user_count = dict(zip(g["u"].to_list(), g["n"].to_list()))
        self.user_cols = user_feature_columns(train.posts) if self.use_user else []
        fill = []
        for c in self.user_cols:
            v = signed_log1p(train.posts[c].cast(pl.Float64).to_numpy())
            med = np.nanmedian(v) if np.isfinite(v).any() else 0.0
            fill.append(float(med))
        self.user_fill = fill
        self.category_values = category_vocabulary(train.posts) if self.categories else {}
        self.names = []
        return self

    # -- transforming ---------------------------------------------------------------
    def _role_width(self, role: str) -> int:
        """Columns the role adds before its missing flag."""
        kind, shape = self.roles[role]["kind"], self.roles[role]["shape"]
        return shape[-1] if kind == "grid" else 2 + self.text_buckets if kind == "tokens" else int(np.prod(shape))

    def _check_role(self, data: HeadData, role: str) -> None:
        want = self.roles[role]
        if role not in data.stores:
            raise PipeError(f"the model was fitted with a {role} store ({want['kind']}); none was given to predict")
        spec = data.stores[role].spec
        if spec.kind != want["kind"] or list(spec.shape) != want["shape"]:
            raise PipeError(f"{role} store {data.stores[role].extractor_id} is {spec.kind} {spec.shape}, "
                            f"the model was fitted on {want['kind']} {tuple(want['shape'])}")

    def _role_names(self, role: str) -> list[str]:
        if self.roles[role]["kind"] == "tokens":
            names = ["n_tokens", "unk_frac", *[f"tok_{b}" for b in range(self.text_buckets)]]
        else:
            names = [f"{role}_{j}" for j in range(self._role_width(role))]
        return [*names, f"{role}_missing"]

    def _fill_role(self, data: HeadData, role: str, ids: list[str], out: np.ndarray) -> None:
        """Writes the role's columns and its missing flag for `ids` into `out` (len(ids), width + 1)."""
        rows, ok = data.features(role, ids)
        kind = self.roles[role]["kind"]
        if kind == "grid":
            rows = rows.astype(np.float32).mean(axis=1)  # (n, R, D) -> (n, D)
        elif kind == "tokens":
            rows = token_stats(rows, self.text_buckets)  # (n, L) -> (n, 2 + buckets)
        out[:, :-1] = rows.reshape(len(rows), -1)
        out[:, -1] = ~ok

    def _user_block(self, data: HeadData, leave_one_out: bool) -> tuple[np.ndarray, list[str]]:
        posts = data.posts
        cols = []
        for c, fill in zip(self.user_cols, self.user_fill):
            v = signed_log1p(posts[c].cast(pl.Float64).to_numpy()) if c in posts.columns else np.full(posts.height, np.nan)
            cols.append(np.where(np.isfinite(v), v, fill))
        users = posts["user_id"].cast(pl.Utf8).to_list()
        s = np.array([self.user_sum.get(u, 0.0) for u in users], dtype=np.float64)
        n = np.array([self.user_count.get(u, 0) for u in users], dtype=np.float64)
        if leave_one_out:
            s, n = s - data.y.astype(np.float64), n - 1
        mean = np.where(n > 0, s / np.maximum(n, 1), self.global_mean)
        x = np.column_stack([*cols, mean, np.log1p(n), (n <= 0).astype(np.float64)]) if users else np.zeros((0, len(cols) + 3))
        return x.astype(np.float32), [*self.user_cols, "user_mean", "user_log_count", "user_unseen"]

    def _category_block(self, data: HeadData) -> tuple[np.ndarray, list[str]]:
        cols, names = [], []
        for lv, values in self.category_values.items():
            index = {v: i for i, v in enumerate(values)}
            raw = data.posts[lv].to_list() if lv in data.posts.columns else [None] * len(data)
            code = np.array([index.get(str(v), np.nan) if v is not None else np.nan for v in raw], np.float64)
            if self.onehot:
                cols += [(code == i).astype(np.float64) for i in range(len(values))]
                names += [f"{lv}={v}" for v in values]
            else:
                cols.append(code)
                names.append(lv)
        x = np.column_stack(cols) if cols else np.zeros((len(data), 0))
        return x.astype(np.float32), names

    def _context_block(self, data: HeadData) -> tuple[np.ndarray, list[str]]:
        """The `context` columns, linear (a missing value or column is 0), as the paper's SVR baselines add them."""
        cols = [data.posts[c].cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy() if c in data.posts.columns
                else np.zeros(len(data)) for c in self.context]
        return np.column_stack(cols).astype(np.float32).reshape(len(data), len(cols)), list(self.context)

    def _history_block(self, data: HeadData) -> tuple[np.ndarray, list[str]]:
        if data.history is None:
            raise PipeError("user_history needs the dataset's History of earlier posts (pipe train and pipe score "
                            "give it)")
        mean, count = user_history(data.history, data.ids, self.user_history, data.target)
        x = np.column_stack([np.where(count > 0, mean, self.global_mean), count]) if len(data) else np.zeros((0, 2))
        return x.astype(np.float32), ["hist_mean", "hist_count"]

    def rows(self, data: HeadData, leave_one_out: bool = False, extra: np.ndarray | None = None) -> "TableRows":
        """The table of `data` read on demand (`TableRows`); sets `names` and `blocks`."""
        return TableRows(self, data, leave_one_out, extra)

    def transform(self, data: HeadData, leave_one_out: bool = False, extra: np.ndarray | None = None) -> np.ndarray:
        """(N, F) float32 table; `leave_one_out` only for the training rows themselves; `extra`
        (N, k) columns appended as they are (LightGBM's user code). The table is allocated once
        and filled CHUNK rows at a time from the stores: no intermediate copy (issue 21)."""
        rows = self.rows(data, leave_one_out, extra)
        out = np.empty((len(rows), rows.width), np.float32)
        for i in range(0, len(rows), CHUNK):
            rows.fill(slice(i, i + CHUNK), out[i : i + CHUNK])
        return out

    def block_weights(self) -> np.ndarray:
        """1/sqrt(block width) per column: after standardizing, every block adds the same
        variance to a squared distance, so 512 visual columns do not drown 4 user ones."""
        width = {b: self.blocks.count(b) for b in set(self.blocks)}
        return np.array([1.0 / np.sqrt(width[b]) for b in self.blocks])

    def unseen(self, data: HeadData) -> np.ndarray:
        return np.array([u not in self.user_count for u in data.posts["user_id"].cast(pl.Utf8).to_list()], dtype=bool)

    # -- persistence (JSON, no pickle) ------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TabularFeatures":
        return cls(**d)


class TableRows:
    """The feature table of one part, row by row: the few-column blocks (user, categories,
    history, context, `extra`) computed whole, the store blocks read only for the rows asked.
    `rows[idx]` (a slice, an int or an int array) is a (k, F) float32 block; so a whole table
    never has to exist (LightGBM's Dataset reads it in batches: heads/lightgbm.py)."""

    def __init__(self, features: TabularFeatures, data: HeadData, leave_one_out: bool = False,
                 extra: np.ndarray | None = None) -> None:
        f = self.features = features
        self.data, self.ids = data, data.ids
        narrow = []  # (block, x, names): the few-column blocks, computed whole
        if f.use_user:
            narrow.append(("user", *f._user_block(data, leave_one_out)))
        for block, on, make in (("category", f.categories, f._category_block),
                                ("history", f.user_history > 0, f._history_block),
                                ("context", bool(f.context), f._context_block)):
            if on:
                narrow.append((block, *make(data)))
        self.roles = [r for r in ("visual", "text") if r in f.roles]
        if not self.roles and not narrow:
            raise PipeError("no features left: every block (visual, text, user) is ablated or has no store")
        for role in self.roles:
            f._check_role(data, role)
        names, blocks = [], []
        for role in self.roles:
            nm = f._role_names(role)
            names, blocks = names + nm, blocks + [role] * len(nm)
        self.store_width = len(names)
        for block, _, nm in narrow:
            names, blocks = names + nm, blocks + [block] * len(nm)
        cols = [x for _, x, _ in narrow] + ([] if extra is None else [np.asarray(extra, np.float32)])
        self.narrow = np.column_stack(cols).astype(np.float32) if cols else np.zeros((len(data), 0), np.float32)
        self.width = len(names) + (0 if extra is None else extra.shape[1])
        f.names, f.blocks = names, blocks
        self.read_since_release = 0  # rows read since the stores were last unmapped

    def __len__(self) -> int:
        return len(self.ids)

    def fill(self, idx: slice | np.ndarray, out: np.ndarray) -> None:
        """Rows `idx` into `out` (k, F)."""
        ids = self.ids[idx] if isinstance(idx, slice) else [self.ids[i] for i in idx]
        col = 0
        for role in self.roles:
            w = self.features._role_width(role) + 1
            self.features._fill_role(self.data, role, ids, out[:, col : col + w])
            col += w
        out[:, col:] = self.narrow[idx]
        self.read_since_release += len(ids)
        if self.read_since_release >= RELEASE_ROWS:  # the stores' mapped pages read so far leave the RSS
            self.read_since_release = 0
            for role in self.roles:
                self.data.stores[role].release()

    def __getitem__(self, idx: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            return self[np.array([idx])][0]
        idx = idx if isinstance(idx, slice) else np.asarray(idx, np.int64)
        k = len(range(*idx.indices(len(self)))) if isinstance(idx, slice) else len(idx)
        out = np.empty((k, self.width), np.float32)
        self.fill(idx, out)
        return out


ABLATIONS = ("visual", "text", "user")
VISUAL = Role(("grid", "vector"), default="vgg16-pool5", required=False, modality="image")
TEXT = Role(("vector", "tokens"), default="tfidf", required=False, modality="text")


class TabularHead(Head):
    """Base of the heads that read the feature table (svr, lightgbm): roles and features
    follow the config's `ablate` and `text_buckets`."""

    ABLATIONS = ABLATIONS
    onehot_categories = False  # how the category levels enter (SVR: one-hot; trees: codes)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        c = self.config
        self.features = TabularFeatures("visual" not in c.ablate, "text" not in c.ablate, "user" not in c.ablate,
                                        c.text_buckets, c.categories, self.onehot_categories, c.user_history,
                                        tuple(c.context))

    def roles(self) -> dict[str, Role]:
        return {role: r for role, r in (("visual", VISUAL), ("text", TEXT)) if role not in self.config.ablate}

    def save_state(self, directory: Path, **extra: Any) -> Path:
        """`<name>.json` with the config, the fitted feature table and `extra` (JSON, no pickle);
        returns the folder for the head's own model file."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {"config": config_to_dict(self.config), "features": self.features.to_json(), **extra}
        (directory / f"{self.name}.json").write_text(json.dumps(state))
        return directory

    @classmethod
    def load_state(cls, directory: Path) -> tuple[Any, dict[str, Any]]:
        """A head rebuilt from `save_state` (config and feature table), and the whole state."""
        state = json.loads((Path(directory) / f"{cls.name}.json").read_text())
        head = cls(cls.saved_config(state["config"])[0])
        head.features = TabularFeatures.from_json(state["features"])
        return head, state
