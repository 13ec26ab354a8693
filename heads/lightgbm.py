"""LightGBM baseline: gradient-boosted trees on the baselines' feature table
(`pipeline/head/tabular.py`: pooled visual vector, text vector or token statistics, user
features) plus the user id as a categorical feature, early-stopped on the validation part.
The SMP winners' options: `categories=true` (the three category levels, categorical too)
and `user_history=k` (the user's last k earlier training scores: mean and count).

A user unseen in training gets a missing category (LightGBM's missing-value branch) and
the global training mean as `user_mean`; `unseen_users` flags them. The model is saved
with `Booster.save_model` (text, truncated at the best iteration), the feature statistics
and config as JSON: nothing is unpickled on load. Its feature importances (total gain per
column) are saved beside it (`importances.json`), which `pipe report` draws without lightgbm.

With `scheduler` (or `dask_workers`) the table never sits on one machine: the statistics
are fitted on the driver from the posts table, each partition of `partition_rows` posts
is built on a worker from the stores (a filesystem the workers share), and
`lightgbm.DaskLGBMRegressor` trains on them. lightgbm.dask has no early stopping, so it
runs all `n_estimators` rounds and keeps the best on the validation part, whose l2 curve
is summed over partitions on the workers (`_valid_sq_errors`).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from heads import register
from pipeline.head.tabular import CHUNK, IMPORTANCES, TableRows, TabularHead
from pipeline.head.base import HeadData, Progress
from pipeline.core.errors import PipeError


@register
class LightGBMHead(TabularHead):
    name = "lightgbm"
    on_dask = True  # trains on dask when --scheduler / --dask-workers are given

    search_space = {  # `pipe tune`: the usual boosting knobs (n_estimators is ended by early stopping)
        "learning_rate": ("log", 0.01, 0.3), "num_leaves": ("int", 7, 127),
        "min_child_samples": ("int", 5, 100), "colsample_bytree": ("float", 0.3, 1.0),
    }

    @dataclass
    class Config:
        n_estimators: int = 2000  # most boosting rounds; early stopping usually ends far sooner
        learning_rate: float = 0.05  # shrinkage per round
        num_leaves: int = 31  # leaves per tree
        min_child_samples: int = 20  # fewest posts in a leaf
        colsample_bytree: float = 0.8  # share of columns drawn per tree
        early_stopping_rounds: int = 50  # stop after this many rounds without a better valid l2
        text_buckets: int = 64  # hashed bag-of-ids width when the text store holds tokens
        user_categorical: bool = True  # the user id as a categorical feature
        categories: bool = False  # the category levels as categorical features (the SMP winners')
        user_history: int = 0  # k > 0: mean and count of the user's last k earlier training scores (leak-free)
        n_jobs: int | None = None  # threads; None = LightGBM's default (all cores)
        seed: int = 0  # LightGBM's random seed (column sampling)
        ablate: tuple[str, ...] = ()  # any of visual, text, user: leave that feature block out
        context: tuple[str, ...] = ()  # numeric posts columns added as they are (as svr's `context`)
        partition_rows: int = 50_000  # posts per partition of the dask feature table (built on a worker)
        # where it trains (--scheduler / --dask-workers) is a run setting: self.settings

    def __init__(self, config: "LightGBMHead.Config | None" = None) -> None:
        super().__init__(config or self.Config())
        self.users: dict[str, int] = {}  # training user -> category code
        self.booster: lgb.Booster | None = None

    def _code(self, data: HeadData) -> np.ndarray | None:
        """(N, 1) user category codes (unseen -> missing), or None without `user_categorical`."""
        if not self.config.user_categorical:
            return None
        users = data.posts["user_id"].cast(pl.Utf8).to_list()
        return np.array([self.users.get(u, np.nan) for u in users], dtype=np.float32)[:, None]

    def _table(self, data: HeadData, leave_one_out: bool = False) -> np.ndarray:
        return self.features.transform(data, leave_one_out, extra=self._code(data))  # one (N, F) float32 allocation

    def _dataset(self, data: HeadData, params: dict, train: bool) -> lgb.Dataset:
        """LightGBM's Dataset read from the stores in batches (`StoreDataset`): no (N, F) table.
        As LGBMRegressor builds them: the valid set takes names, categories and bins from the
        training set (lightgbm.train sets it as the reference)."""
        rows = TableSequence(self.features.rows(data, leave_one_out=train, extra=self._code(data)))
        if not train:
            return StoreDataset(rows, label=data.y, categorical_feature="auto", params=params)
        return StoreDataset(rows, label=data.y, feature_name=self._names(),
                            categorical_feature=self._categorical() or "auto", params=params)

    def _names(self) -> list[str]:
        return self.features.names + (["user_id"] if self.config.user_categorical else [])

    def _categorical(self) -> list[str]:
        """Columns LightGBM splits on as categories: the user id and the category levels."""
        levels = [n for n, b in zip(self.features.names, self.features.blocks) if b == "category"]
        return levels + (["user_id"] if self.config.user_categorical else [])

    def _fit_features(self, train: HeadData) -> None:
        self.features.fit(train)
        self.users = {u: i for i, u in enumerate(sorted(set(train.posts["user_id"].cast(pl.Utf8).to_list())))}

    def _params(self) -> dict:
        c = self.config
        return dict(n_estimators=c.n_estimators, learning_rate=c.learning_rate, num_leaves=c.num_leaves,
                    min_child_samples=c.min_child_samples, colsample_bytree=c.colsample_bytree, random_state=c.seed,
                    n_jobs=c.n_jobs, deterministic=True, force_row_wise=True, verbose=-1)

    def _keep_best(self, booster: lgb.Booster, curve: list[float]) -> None:
        """History from the valid l2 curve; the booster truncated at its best round, through the text format save() writes."""
        self.history = [{"step": i + 1, "valid_mse": float(v)} for i, v in enumerate(curve)]
        best = int(np.argmin(curve)) + 1 if curve else booster.current_iteration()
        self.booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))

    @property
    def is_fitted(self) -> bool:
        return self.booster is not None

    def fit(self, train: HeadData, valid: HeadData, progress: Progress | None = None) -> "LightGBMHead":
        c = self.config
        if self.settings.on_dask:
            return self._fit_dask(train, valid)
        self._fit_features(train)
        # LGBMRegressor's parameters, as its fit passes them to lightgbm.train
        params = {k: v for k, v in self._params().items() if k not in ("n_estimators", "n_jobs")}
        params.update(objective="regression", metric=["l2"], num_threads=_threads(c.n_jobs))
        dtrain, dvalid = self._dataset(train, params, train=True), self._dataset(valid, params, train=False)
        curves: dict = {}
        booster = lgb.train(params, dtrain, c.n_estimators, valid_sets=[dvalid], valid_names=["valid"], callbacks=[
            lgb.early_stopping(c.early_stopping_rounds, verbose=False), lgb.record_evaluation(curves)])
        self._keep_best(booster, curves["valid"]["l2"])  # the patience rounds stay in the history
        return self

    # -- on dask ------------------------------------------------------------------------
    def _parts(self, data: HeadData) -> list[HeadData]:
        rows = self.config.partition_rows
        return [data.subset(slice(i, i + rows)) for i in range(0, len(data), rows)]

    def _dask_table(self, data: HeadData, leave_one_out: bool = False):
        """(N, F) dask array: one block per partition, built where it is computed."""
        import dask.array as da
        from dask import delayed

        width = self._table(data.subset(slice(0, 1)), leave_one_out).shape[1]  # also sets the column names
        blocks = [da.from_delayed(delayed(self._table)(p, leave_one_out), shape=(len(p), width), dtype=np.float32)
                  for p in self._parts(data)]
        return da.concatenate(blocks)  # (N, F)

    def _fit_dask(self, train: HeadData, valid: HeadData) -> "LightGBMHead":
        import dask.array as da
        from lightgbm.dask import DaskLGBMRegressor

        from pipeline.core.cluster import dask_client

        c = self.config
        if c.partition_rows < 1:
            raise PipeError(f"lightgbm: partition_rows must be at least 1, got {c.partition_rows}")
        self._fit_features(train)
        x = self._dask_table(train, leave_one_out=True)
        y = da.from_array(train.y, chunks=(x.chunks[0],))
        with dask_client(self.settings.scheduler, self.settings.dask_workers) as client:
            params = {k: v for k, v in self._params().items() if k != "n_jobs"}  # threads: each worker's own
            model = DaskLGBMRegressor(client=client, **params)
            with warnings.catch_warnings():  # lightgbm.dask always sets threads per worker, and says so
                warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
                model.fit(x, y, feature_name=self._names(),
                          categorical_feature=[self._names().index(n) for n in self._categorical()] or "auto")
            booster = model.booster_
            text = client.scatter(booster.model_to_string(), broadcast=True)
            parts = self._parts(valid)
            sums = client.gather([client.submit(_valid_sq_errors, text, self, p, pure=False) for p in parts])
        curve = (np.sum(sums, axis=0) / max(len(valid), 1)).tolist() if parts else []
        self._keep_best(booster, curve)
        return self

    def predict(self, data: HeadData) -> np.ndarray:
        """Partition by partition: the table of a large dataset is never whole in memory."""
        if self.booster is None:
            raise self.not_fitted()
        out = [np.asarray(self.booster.predict(self._table(p)), dtype=np.float32) for p in self._parts(data)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def unseen_users(self, data: HeadData) -> np.ndarray:
        """True for users without a training post: missing category, global mean as user_mean."""
        return self.features.unseen(data)

    def save(self, directory: Path) -> None:
        if self.booster is None:
            raise self.not_fitted()
        folder = self.save_state(directory, users=list(self.users))
        self.booster.save_model(folder / "lightgbm.txt")
        (folder / IMPORTANCES).write_text(json.dumps({"kind": "gain", "features": self.importances()}))

    def importances(self) -> list[tuple[str, float]]:
        """(column, total gain of its splits) for every column, largest first (ties by name)."""
        if self.booster is None:
            raise self.not_fitted()
        gain = self.booster.feature_importance(importance_type="gain")
        return sorted(zip(self.booster.feature_name(), map(float, gain)), key=lambda t: (-t[1], t[0]))

    @classmethod
    def load(cls, directory: Path) -> "LightGBMHead":
        head, state = cls.load_state(directory)
        head.users = {u: i for i, u in enumerate(state["users"])}
        head.booster = lgb.Booster(model_file=str(Path(directory) / "lightgbm.txt"))
        return head


def _threads(n_jobs: int | None) -> int:
    """`n_jobs` as LGBMRegressor reads it: None -> the physical cores; negative -> joblib's
    convention (cores + 1 + n_jobs)."""
    from joblib import cpu_count

    if n_jobs is None:
        return cpu_count(only_physical_cores=True)
    return max(cpu_count() + 1 + n_jobs, 1) if n_jobs < 0 else n_jobs


class TableSequence(lgb.Sequence):
    """The feature table (`TableRows`) as LightGBM's batched row access: CHUNK rows a batch."""

    batch_size = CHUNK

    def __init__(self, rows: TableRows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx):  # int, slice or list of ints -> 1-D / 2-D float32
        return self.rows[idx]


class StoreDataset(lgb.Dataset):
    """`lgb.Dataset` over one `TableSequence`, with LightGBM's bin sample taken in CHUNK-row
    blocks (issue 21: bounded memory).

    LightGBM's own Sequence path stacks every sampled row into one dense float64 matrix
    (200K rows x F: 4 GB for F = 2580) before keeping each column's non-zeros; here the
    sampled rows are read CHUNK at a time, twice (the non-zeros counted, then copied into
    arrays allocated once), so the sample costs only what LightGBM keeps of it (the values
    it bins), and it is freed once the bins exist, before the rows are pushed batch by
    batch. The sample is the one `lgb.Dataset(matrix)` takes (the same row indices from
    LightGBM, the same test for a zero as its C++ `kZeroThreshold`, a float literal), so
    the bins and trees are the matrix path's (tests/test_scale_equality.py).

    `get_params` gives LightGBM every parameter, as the matrix path passes them to its C API:
    lightgbm's Sequence path keeps only the "dataset" ones, so its bin sample would ignore
    `seed` (another sample of rows) and `min_data_in_leaf` (other features pre-filtered).
    """

    def get_params(self) -> dict:
        return dict(self.params or {})

    def _Dataset__sample(self, *, seqs: list[TableSequence], total_nrow: int):  # overrides lgb.Dataset.__sample
        (seq,) = seqs
        indices = self._create_sample_indices(total_nrow=total_nrow)  # LightGBM's draw, ascending

        def blocks():  # (first sample row, (F, k) block, its non-zeros as LightGBM's C++ tests them)
            for s in range(0, len(indices), CHUNK):
                block = seq.rows[indices[s : s + CHUNK]].T
                yield s, block, (np.abs(block) > np.float32(1e-35)) | np.isnan(block)

        counts = np.zeros(seq.rows.width, np.int64)
        for _, _, keep in blocks():  # pass 1: the size of each column's sample
            counts += keep.sum(axis=1)
        values = [np.empty(c, np.float64) for c in counts.tolist()]  # allocated once: no pieces to join
        where = [np.empty(c, np.int32) for c in counts.tolist()]
        filled = np.zeros_like(counts)
        for s, block, keep in blocks():  # pass 2: the rows read again, each column's non-zeros copied in place
            col, row = np.nonzero(keep)  # column-major: rows ascending within a column
            per = np.bincount(col, minlength=len(counts))
            ends = np.cumsum(per)
            vals = block[col, row]
            for j in np.flatnonzero(per).tolist():
                a, b, f = ends[j] - per[j], ends[j], filled[j]
                values[j][f : f + b - a] = vals[a:b]
                where[j][f : f + b - a] = row[a:b] + s
            filled += per
        return values, where

    def _init_from_sample(self, sample_data, sample_indices, sample_cnt, total_nrow):
        super()._init_from_sample(sample_data, sample_indices, sample_cnt, total_nrow)
        sample_data.clear()  # the bins are built: the sample is not needed while the rows are pushed
        sample_indices.clear()
        return self


def _leaf_values(booster: lgb.Booster) -> list[np.ndarray]:
    """Per tree, the output of each leaf by leaf index (a one-leaf tree has index 0)."""
    out = []
    for tree in booster.dump_model()["tree_info"]:
        values: dict[int, float] = {}
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "leaf_value" in node:
                values[node.get("leaf_index", 0)] = node["leaf_value"]
            else:
                stack += [node["left_child"], node["right_child"]]
        out.append(np.array([values[i] for i in range(len(values))]))
    return out


def _valid_sq_errors(model_text: str, head: LightGBMHead, part: HeadData, rows: int = 4096) -> np.ndarray:
    """Sum over the partition's posts of the squared error after each round: (rounds,).

    Runs on a dask worker. A regression prediction is the sum of one leaf per tree (the
    average label is folded into the first tree), so the cumulative sum over trees of
    each post's leaves is its prediction after every round: the whole curve in one pass.
    """
    booster = lgb.Booster(model_str=model_text)
    values = _leaf_values(booster)
    x, y = head._table(part), part.y.astype(np.float64)
    total = np.zeros(len(values))
    for i in range(0, len(y), rows):
        leaves = booster.predict(x[i : i + rows], pred_leaf=True).astype(np.int64)  # (n, rounds)
        contrib = np.column_stack([v[leaves[:, t]] for t, v in enumerate(values)])  # (n, rounds)
        pred = np.cumsum(contrib, axis=1)  # prediction after each round
        total += ((pred - y[i : i + rows, None]) ** 2).sum(axis=0)
    return total
