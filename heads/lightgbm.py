"""LightGBM baseline: gradient-boosted trees on the baselines' feature table
(`heads/_tabular.py`: pooled visual vector, text vector or token statistics, user
features) plus the user id as a categorical feature, early-stopped on the validation part.

A user unseen in training gets a missing category (LightGBM's missing-value branch) and
the global training mean as `user_mean`; `unseen_users` flags them. The model is saved
with `Booster.save_model` (text, truncated at the best iteration), the feature statistics
and config as JSON: nothing is unpickled on load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from heads import register
from heads._tabular import TabularFeatures
from heads.base import Head, HeadData, Role
from heads.svr import TEXT, VISUAL
from pipeline.errors import PipeError
from pipeline.headconfig import config_from_dict, config_to_dict

ABLATIONS = ("visual", "text", "user")


@register
class LightGBMHead(Head):
    name = "lightgbm"
    ABLATIONS = ABLATIONS

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
        n_jobs: int | None = None  # threads; None = LightGBM's default (all cores)
        seed: int = 0  # LightGBM's random seed (column sampling)
        ablate: tuple[str, ...] = ()  # any of visual, text, user: leave that feature block out
        scheduler: str | None = None  # dask scheduler address for distributed training (not yet supported)

        def __post_init__(self) -> None:
            bad = [a for a in self.ablate if a not in ABLATIONS]
            if bad:
                raise ValueError(f"unknown ablation {bad}; lightgbm knows {list(ABLATIONS)}")

    def __init__(self, config: "LightGBMHead.Config | None" = None) -> None:
        super().__init__(config or self.Config())
        c = self.config
        self.features = TabularFeatures("visual" not in c.ablate, "text" not in c.ablate, "user" not in c.ablate,
                                        c.text_buckets)
        self.users: dict[str, int] = {}  # training user -> category code
        self.booster: lgb.Booster | None = None
        self.history: list[dict] = []

    def roles(self) -> dict[str, Role]:
        out = {}
        if "visual" not in self.config.ablate:
            out["visual"] = VISUAL
        if "text" not in self.config.ablate:
            out["text"] = TEXT
        return out

    def _table(self, data: HeadData, leave_one_out: bool = False) -> np.ndarray:
        x = self.features.transform(data, leave_one_out)
        if not self.config.user_categorical:
            return x
        users = data.posts["user_id"].cast(pl.Utf8).to_list()
        code = np.array([self.users.get(u, np.nan) for u in users], dtype=np.float32)[:, None]  # unseen -> missing
        return np.hstack([x, code])

    def _names(self) -> list[str]:
        return self.features.names + (["user_id"] if self.config.user_categorical else [])

    def fit(self, train: HeadData, valid: HeadData) -> "LightGBMHead":
        c = self.config
        if c.scheduler:
            raise PipeError("lightgbm on a dask scheduler (--scheduler) is not supported yet; train without it")
        self.features.fit(train)
        self.users = {u: i for i, u in enumerate(sorted(set(train.posts["user_id"].cast(pl.Utf8).to_list())))}
        xt, xv = self._table(train, leave_one_out=True), self._table(valid)
        names = self._names()
        model = lgb.LGBMRegressor(
            n_estimators=c.n_estimators, learning_rate=c.learning_rate, num_leaves=c.num_leaves,
            min_child_samples=c.min_child_samples, colsample_bytree=c.colsample_bytree, random_state=c.seed,
            n_jobs=c.n_jobs, deterministic=True, force_row_wise=True, verbose=-1,
        )
        model.fit(
            xt, train.y, eval_X=(xv,), eval_y=(valid.y,), eval_names=["valid"], eval_metric="l2",
            feature_name=names, categorical_feature=["user_id"] if c.user_categorical else "auto",
            callbacks=[lgb.early_stopping(c.early_stopping_rounds, verbose=False)],
        )
        curve = model.evals_result_["valid"]["l2"]
        self.history = [{"step": i + 1, "valid_mse": float(v)} for i, v in enumerate(curve)]
        best = model.best_iteration_ or len(curve)
        # Keep only the best rounds, through the same text format that save() writes.
        self.booster = lgb.Booster(model_str=model.booster_.model_to_string(num_iteration=best))
        return self

    def predict(self, data: HeadData) -> np.ndarray:
        if self.booster is None:
            raise PipeError("lightgbm: predict before fit/load")
        return np.asarray(self.booster.predict(self._table(data)), dtype=np.float32)

    def unseen_users(self, data: HeadData) -> np.ndarray:
        """True for users without a training post: missing category, global mean as user_mean."""
        return self.features.unseen(data)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        assert self.booster is not None
        self.booster.save_model(directory / "lightgbm.txt")
        state = {"config": config_to_dict(self.config), "features": self.features.to_json(), "users": list(self.users)}
        (directory / "lightgbm.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, directory: Path) -> "LightGBMHead":
        directory = Path(directory)
        state = json.loads((directory / "lightgbm.json").read_text())
        head = cls(config_from_dict(cls.Config, state["config"]))
        head.features = TabularFeatures.from_json(state["features"])
        head.users = {u: i for i, u in enumerate(state["users"])}
        head.booster = lgb.Booster(model_file=str(directory / "lightgbm.txt"))
        return head
