"""What every task answers, so `pipe train`, `pipe evaluate` and `pipe score` need no special cases.

A task turns the posts (and side tables) of a dataset into the three parts a head fits
and is judged on (`prepare`), gives the shared trainer its loss and the validation
criterion early stopping watches, checks and scores what a head's `predict` returns, and
writes it: `predictions.parquet` rows (always `post_id` and `split`, then the task's
columns) and `pipe score` rows.

A task owns its protocol: its own `Config` (`pipe train --task-set key=value`, recorded in
config.json under `task.config` and restored for scoring) sets how the parts are built
(ranking: negatives and candidate lists; regression: the window of sequence heads;
embedding: the tag vocabulary). It never reads the head's config, so every head of a task
is judged on the same parts. Heads read the task config from `HeadData.task_config`; a
head that needs a setting to have a value declares it in `Head.task_defaults`, applied
unless the user gave the key. Everything else commands ask about a task (report plots,
whether `pipe rank` or `pipe search` apply, score columns) is an attribute or a method
here, so nothing outside this package branches on a task's name.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import polars as pl

from pipeline.core.config import coerce, config_from_dict, config_to_dict, field_types
from pipeline.core.errors import PipeError
from pipeline.data.splits import SplitSpec
from pipeline.store import FeatureStore
from pipeline.train.data import HeadData


@dataclass
class Parts:
    """A dataset prepared for one task: the parts, and what the run records about them."""

    data: dict[str, HeadData]  # "train", "valid", "test"
    summary: dict[str, Any]  # per part: counts and time range (config.json "split.parts")
    counts: dict[str, int] = field(default_factory=dict)  # examples used / left out (config.json "posts")
    notes: list[str] = field(default_factory=list)  # said to the user and kept in config.json
    files: dict[str, pl.DataFrame] = field(default_factory=dict)  # extra run files (candidates.parquet)


@dataclass
class NoConfig:
    """The config of a task without settings."""


class Task(ABC):
    name: ClassVar[str]  # registry name
    summary: ClassVar[str]  # one line for `pipe list tasks`
    metrics_names: ClassVar[tuple[str, ...]]  # keys of metrics.json "valid"/"test"
    criterion: ClassVar[str]  # the validation metric early stopping watches
    higher_is_better: ClassVar[bool]  # direction of `criterion`
    default_split: ClassVar[str | None] = None  # --split when none is given (None: chronological 0.7/0.1/0.2)
    Config: ClassVar[type] = NoConfig  # the task's settings (`--task-set`); a dataclass, every field documented
    ALIASES: ClassVar[tuple[str, ...]] = ()  # Config keys `--set` also gives (the README's `--set negatives=...`)
    plots: ClassVar[str | None] = None  # the plot set `pipe report` draws for its runs (pipeline/evaluate/report.py)
    history: ClassVar[bool] = False  # its heads read a dataset History (windows, user histories), at `pipe score` too
    ranks_posts: ClassVar[bool] = False  # a score per post that orders a user's candidates (`pipe rank`)
    searchable: ClassVar[bool] = False  # outputs a run can be searched by tag with (`pipe search`)
    constant_predictor: ClassVar[str] = "a constant prediction"  # what `constant_criterion` scores, for people

    def __init__(self, target: str = "score", config: Any = None) -> None:
        self.target = target  # regression target column (`--target`); other tasks ignore it
        self.config = config if config is not None else self.Config()  # the task's settings (`--task-set`)

    @classmethod
    def build_config(cls, head: type, given: dict[str, Any] | None = None) -> Any:
        """The task config of a run of `head`: the task's defaults, then the head's
        `task_defaults`, then `given` (`--task-set` and the `--set` aliases; strings or typed)."""
        types_ = field_types(cls.Config)
        values = {**{k: v for k, v in head.task_defaults.items() if k in types_}, **(given or {})}
        kwargs = {}
        for key, raw in values.items():
            if key not in types_:
                raise PipeError(f"--task-set {key}: the {cls.name} task has no such setting; "
                                f"valid keys: {', '.join(types_) or 'none'}")
            try:
                kwargs[key] = coerce(raw, types_[key])
            except (ValueError, TypeError) as e:
                raise PipeError(f"--task-set {key}={raw!r}: {e}") from None
        try:
            return cls.Config(**kwargs)
        except (ValueError, TypeError) as e:
            raise PipeError(f"the {cls.name} task: invalid config: {e}") from None

    @classmethod
    def options(cls, head: type, transform: str | None, min_target: float | None) -> dict[str, Any]:
        """The task's keyword options from `--target-transform` / `--min-target` (only regression takes them)."""
        if transform or min_target is not None:
            raise PipeError(f"--target-transform / --min-target are for regression heads; {head.name!r} is "
                            f"a {head.task} head")
        return {}

    def check_data(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], head: str, dataset: str) -> None:
        """Refuse, before stores are even looked at, a dataset without what the task learns from,
        saying which task the head needs and what produces its data (`pipe synth --task`, ingest)."""

    def wrong_data(self, head: str, dataset: str, lacks: str, needs: str, make: str) -> PipeError:
        """The one wording of `check_data`'s refusals."""
        return PipeError(f"head {head!r} is a {self.name} head: its dataset needs {needs}, and {dataset!r} {lacks}; "
                         f"{make}, or pick a head of the dataset's task (`pipe list heads`)")

    @abstractmethod
    def prepare(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], split: SplitSpec,
                stores: dict[str, FeatureStore]) -> Parts:
        """Split the dataset into HeadData parts (each carrying `task_config`); every statistic
        uses the training part only."""

    @abstractmethod
    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        """The training loss of a torch head's forward output (a scalar tensor)."""

    @abstractmethod
    def check(self, out: Any, data: HeadData, head: str, what: str) -> Any:
        """A head's `predict` output, validated (shape, finiteness); PipeError otherwise."""

    @abstractmethod
    def metrics(self, data: HeadData, out: Any) -> dict[str, float]:
        """The task's metrics of a checked output against the part's labels."""

    @abstractmethod
    def predictions(self, data: HeadData, out: Any, part: str) -> pl.DataFrame:
        """predictions.parquet rows: post_id, split, then the task's columns."""

    def prediction_chunks(self, data: HeadData, out: Any, part: str) -> Iterator[pl.DataFrame]:
        """`predictions` in pieces the run streams to predictions.parquet (the same rows); a
        task whose rows are wide (embedding) yields bounded chunks instead of the whole part."""
        yield self.predictions(data, out, part)

    @abstractmethod
    def scores(self, data: HeadData, out: Any) -> pl.DataFrame:
        """`pipe score` rows for new posts (post_id first)."""

    def criterion_value(self, data: HeadData, out: Any) -> float:
        """The criterion of an output (the trainer turns NaN into "never best")."""
        return self.metrics(data, out)[self.criterion]

    def criterion_fn(self, valid: HeadData, y: np.ndarray | None,
                     output: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], float]:
        """What a torch head's early stopping computes from raw validation outputs (`y`: the
        batches' targets; `output`: raw outputs -> the head's `predict` value)."""
        return lambda raw: self.criterion_value(valid, output(raw))

    def constant_criterion(self, train: HeadData, valid: HeadData) -> float | None:
        """The validation criterion of a model that learned nothing (`constant_predictor`): a
        run that never beats it is flagged `never improved`. None: unknown for this task."""
        return None

    def improves(self, value: float | None, constant: float | None) -> bool:
        """Whether a validation criterion beats the constant predictor's (NaN never does)."""
        if value is None or not np.isfinite(value):
            return False
        if constant is None or not np.isfinite(constant):
            return True
        return value > constant if self.higher_is_better else value < constant

    def fitted_meta(self, y_train: np.ndarray | None) -> dict[str, Any]:
        """Statistics of the training targets a torch head keeps in its meta (regression: the mean)."""
        return {}

    def scores_independent(self) -> bool:
        """Whether a scored post's output depends on that post alone and not on the others scored
        with it, so `pipe serve` may score the posts of concurrent requests in one pass."""
        return True

    def empty_output(self, data: HeadData) -> Any:
        """The output for a part with nothing to predict, or None to let the head predict it."""
        return None

    def training_units(self, data: HeadData) -> int:
        """What one training batch is counted in (the regime's data size, the schedule's epoch):
        posts, or the part's example rows where it has examples."""
        return len(data) if data.examples is None else data.examples.height

    def measurable(self, data: HeadData) -> bool:
        """Whether scored posts carry labels enough for `pipe score` to report the metrics."""
        return False

    def score_examples(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], users: list[str] | None,
                       run: str) -> pl.DataFrame | None:
        """`HeadData.examples` of posts to score (ranking: user-post pairs); None: the posts themselves."""
        if users is not None:
            raise PipeError(f"--users: run {run} is a {self.name} run; only ranking runs score posts per user")
        return None

    def scored_files(self, data: HeadData) -> dict[str, pl.DataFrame]:
        """Tables `pipe score` writes beside the scores as OUT.<name>.parquet (regression: windows)."""
        return {}

    @property
    def judged_on(self) -> str:
        """What the task's labels are, for a comparison row's `target` (regression: the column)."""
        return self.target

    @property
    def transform_kind(self) -> str:
        """The target transform a row's metrics were measured under (`none` but for regression)."""
        return "none"

    def reported(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Recorded metrics as `pipe evaluate` and `pipe report` compare them: on the original
        target scale under the task's metric names, any other scale in its own `_scaled` names."""
        return dict(metrics)

    def describe(self) -> dict[str, Any]:
        """What config.json records about the task."""
        return {"name": self.name, "target": self.target, "criterion": self.criterion,
                "higher_is_better": self.higher_is_better, "metrics": list(self.metrics_names),
                "config": config_to_dict(self.config)}

    def restore(self, described: dict[str, Any]) -> None:
        """The task config and fitted state from what `describe` recorded (regression: the
        target transform), for scoring."""
        self.config = config_from_dict(self.Config, described.get("config") or {})

    def label(self, posts: pl.DataFrame) -> pl.DataFrame:
        """New posts as the heads see them (regression: the target on the fitted scale)."""
        return posts


def post_users(posts: pl.DataFrame) -> dict[str, pl.Series]:
    """The posts' `user_id` as a predictions.parquet column (`pipe report`'s per-user errors);
    none for posts without one."""
    return {"user_id": posts["user_id"].cast(pl.Utf8)} if "user_id" in posts.columns else {}


def finite_1d(out: Any, n: int, head: str, what: str) -> np.ndarray:
    """`out` as a float32 vector of n finite values; PipeError naming the head otherwise."""
    from pipeline.core.errors import PipeError

    y = np.asarray(out, dtype=np.float32).reshape(-1)
    if y.shape[0] != n:
        raise PipeError(f"head {head!r} returned {y.shape[0]} predictions for {n} {what} examples")
    if not np.isfinite(y).all():
        raise PipeError(f"head {head!r} predicted {int((~np.isfinite(y)).sum())} non-finite values on {what}")
    return y
