"""`WindowHead`: a TorchHead whose example is a post with its temporal window (DSN).

Batches carry, for each post, its window (`pipeline/train/windows.py`: the post and the
`window - 1` posts just before it in the dataset's History, left-aligned, target last;
`window` and `window_scope` are the regression task's settings, read from the training
part's `task_config` and kept in the meta, so the model predicts with the window it learnt):
`mask` (B, l), `visual` / `text` (B, l, D) vectors from the History's stores (zeros
where a post has no row), `cats` (B, l, 3) category codes (0: a value no training post
had, or none); and the post's own `user` row, `time` (B, 67: one-hots of month, day,
hour of posted_at in UTC) and `user_num` (B, U: the numeric user_* columns z-scored with
training statistics, nulls at 0). No label of any post enters a batch except the
post's own `y` while training.

Without a dataset History (a bare HeadData) the window comes from the part's own posts.
Everything fitted (category vocabularies, user statistics, the 1/RMS scales of the
vectors) comes from the training part.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl

from pipeline.head.tabular import LEVELS, category_vocabulary
from pipeline.head.base import HeadData, Role
from pipeline.head.torch_head import Columns, TorchHead, rms_scale
from pipeline.core.errors import PipeError
from pipeline.data.contract import user_feature_columns
from pipeline.train.data import History
from pipeline.train.windows import part_history, window_index

TIME_WIDTH = 12 + 31 + 24  # one-hots of month, day of month, hour
ROLE_OF = {"image": "visual", "text": "text"}  # ablation name -> role


@dataclass
class WindowColumns(Columns):
    history: History | None = None  # where the windows' posts and features come from
    win: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), np.int64))  # (N, l) history rows, -1 padding
    cats: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # (M, 3) codes of history rows
    time: np.ndarray = field(default_factory=lambda: np.zeros((0, TIME_WIDTH), np.float32))  # (N, 67)
    user_num: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (N, U)


def time_onehots(posted_at: pl.Series) -> np.ndarray:
    """(N, 67) one-hots of month, day of month and hour (UTC)."""
    t = posted_at.dt.convert_time_zone("UTC") if posted_at.dtype.time_zone else posted_at  # type: ignore[union-attr]
    out = np.zeros((len(t), TIME_WIDTH), np.float32)
    rows = np.arange(len(t))
    out[rows, t.dt.month().to_numpy() - 1] = 1
    out[rows, 12 + t.dt.day().to_numpy() - 1] = 1
    out[rows, 43 + t.dt.hour().to_numpy()] = 1
    return out


def read_rows(store: Any, ids: list[str]) -> np.ndarray:
    """Rows for ids from a store (or a UnionStore), float32, zeros where it has none."""
    out = np.zeros((len(ids), *store.spec.shape), np.float32)
    have = [i for i, p in enumerate(ids) if p in store]
    if have:
        out[have] = store.read([ids[i] for i in have])
    return out


class WindowHead(TorchHead):
    task_defaults: ClassVar[dict[str, Any]] = {"window": 8}  # l: the post and the l - 1 before it (DSN: 8, Table 3)
    visual_role = Role(("vector",), "clip-", modality="image")
    text_role = Role(("vector",), "clip_text-", modality="text")

    def config_error(self, msg: str) -> PipeError:
        return PipeError(f"head {self.name!r}: {msg}")

    def roles(self) -> dict[str, Role]:
        spec = {"visual": self.visual_role, "text": self.text_role}
        return {role: spec[role] for a, role in ROLE_OF.items() if not self.ablated(a)}

    def adopt_task_settings(self, moved: dict[str, Any]) -> None:
        """A window head saved before tasks owned the window kept it in its config, not its meta."""
        if "window" in moved and "window" not in self.meta:
            self.meta["window"] = int(moved["window"])
            self.meta["window_scope"] = str(moved.get("window_scope", "global"))

    def prepare(self, train: HeadData) -> None:
        tc = train.task_config  # a bare HeadData (no task): the head's default window, global scope
        window = tc.window if tc is not None else self.task_defaults["window"]
        if window is None:
            raise self.config_error("a sequence head needs a window: --task-set window=N (1..512)")
        self.meta["window"], self.meta["window_scope"] = window, tc.window_scope if tc is not None else "global"
        rng = np.random.default_rng(self.config.seed)
        for role in self.roles():
            store = train.stores[role]
            self.meta[f"{role}_dim"] = int(store.spec.shape[-1])
            self.meta[f"{role}_scale"] = rms_scale(store, train.ids, 1024, rng)
        posts = train.posts
        self.meta["categories"] = category_vocabulary(posts)
        cols = user_feature_columns(posts)
        stats = []
        for c in cols:
            v = posts[c].cast(pl.Float64).fill_nan(None)
            mean, std = v.mean(), v.std()
            stats.append((float(mean) if mean is not None else 0.0, float(std) if std else 1.0))
        self.meta["user_cols"], self.meta["user_stats"] = cols, stats

    def history_of(self, data: HeadData) -> History:
        """The dataset's History when it holds every post of `data`, else the part's own posts."""
        h = data.history
        if h is not None and data.posts["post_id"].is_in(h.posts["post_id"].implode()).all():
            return h
        return part_history(data.posts, data.stores, data.target)

    def columns(self, data: HeadData, with_y: bool) -> WindowColumns:
        base = super().columns(data, with_y)
        m = self.meta
        hist = self.history_of(data)
        win = window_index(hist, base.ids, m["window"], m["window_scope"])
        cats = np.zeros((hist.posts.height, len(LEVELS)), np.int64)
        for k, lv in enumerate(LEVELS):
            if lv in hist.posts.columns:
                index = {v: i + 1 for i, v in enumerate(m["categories"][lv])}
                cats[:, k] = [index.get(str(v), 0) if v is not None else 0 for v in hist.posts[lv].to_list()]
        nums = []
        for col, (mean, std) in zip(m["user_cols"], m["user_stats"]):
            v = data.posts[col].cast(pl.Float64).fill_nan(None).to_numpy() if col in data.posts.columns else None
            z = (v - mean) / std if v is not None else np.zeros(len(data))
            nums.append(np.nan_to_num(np.asarray(z, np.float64), nan=0.0))
        user_num = np.column_stack(nums).astype(np.float32) if nums else np.zeros((len(data), 0), np.float32)
        return WindowColumns(base.data, base.ids, base.users, base.y, hist, win, cats,
                             time_onehots(data.posts["posted_at"]), user_num)

    def assemble(self, cols: WindowColumns, rows: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[override]
        out = self.base_batch(cols, rows)
        win = cols.win[rows]  # (B, l)
        mask = win >= 0
        out["mask"] = mask
        out["cats"] = np.where(mask[..., None], cols.cats[np.maximum(win, 0)], 0)  # (B, l, 3)
        uniq = np.unique(win[mask])
        ids = cols.history.posts["post_id"].gather(uniq).to_list() if len(uniq) else []
        at = np.searchsorted(uniq, win[mask])
        for role in self.roles():
            store = cols.history.stores.get(role, cols.data.stores[role])
            feats = read_rows(store, ids)  # (U, D)
            x = np.zeros((*win.shape, feats.shape[-1]), np.float32)  # (B, l, D)
            x[mask] = feats[at]
            out[role] = x
        out["time"], out["user_num"] = cols.time[rows], cols.user_num[rows]
        return out
