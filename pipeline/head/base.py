"""What every head answers, neural or not, so train/evaluate/score treat them alike.

A head names its task (`task`: regression, ranking, embedding; see pipeline/train/tasks)
and declares the feature roles it reads (`roles()`), e.g. UHAN needs a `visual` grid and
`text` tokens. `pipe train` resolves each role to a store (`--visual`, `--text`, or the
role's paper default). What `predict` returns is the task's: a float per post
(regression), a float per row of `data.examples` (ranking), an `EmbeddingOutput`
(embedding). Run settings (device, threads, dask) arrive in `settings`, never in the
saved config. Task settings (a ranking task's negatives, a sequence head's window, the tag
vocabulary) are the task's, not the head's: a head reads them from `HeadData.task_config`.

Everything the rest of the code asks a head is declared here with a default (as
scikit-learn's estimator tags): `search_space`, `small_data`, `paper_settings`, `target_transform`,
`on_dask`, `unseen_users`, `explain`, `history`, `model` / `is_fitted`, `restored_step`, the config's
`ablate` and `seed`, the task settings it needs (`task_defaults`), and the `progress`
callback `fit` takes. Nothing outside this module probes a head with getattr/hasattr
(tests/test_head_contract.py scans for it).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pipeline.core.errors import PipeError
from pipeline.train.data import HeadData, Role, RunSettings

if TYPE_CHECKING:  # torch only where a head trains
    from pipeline.train.checkpoint import Checkpoint

__all__ = ["Explanation", "Head", "HeadData", "Progress", "Role", "RunSettings", "check_ablations"]

Progress = Callable[[dict[str, Any]], None]  # called with each validation evaluation (step, metric, best, ...)


@dataclass
class Explanation:
    """What a head attended to for one post (`Head.explain`), in the model's own weights.

    Each map holds the softmax weights of one attention and sums to 1 over its present
    items (an empty text or a missing image gives None, not a made-up map). `pipe explain`
    draws them: regions as a heat map on the image, words coloured by weight, the modality
    weights as bars, earlier posts as thumbnails with their weights.
    """

    post_id: str
    prediction: Any  # the task's value for the post: a float (regression), {label: confidence} (embedding)
    regions: list[float] | None = None  # weight per visual region, row-major over `grid`
    grid: tuple[int, int] | None = None  # (rows, cols) of the regions: (size/32, size/32) for a pool5 grid
    words: list[tuple[int, float]] | None = None  # (token id of the `text` tokens store, weight), in text order
    modalities: dict[str, float] | None = None  # inter-attention, e.g. {"visual": a1, "text": a2} (UHAN eq 19)
    history: list[tuple[str, float]] | None = None  # (earlier post id, weight): attention over a user's past posts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_ablations(head: str, ablate: Any, known: tuple[str, ...]) -> None:
    """The one ablation check: every name in `ablate` must be one the head knows."""
    bad = [a for a in (ablate or ()) if a not in known]
    if bad:
        raise PipeError(f"--ablate {' '.join(bad)}: head {head!r} knows {', '.join(known) or 'no ablations'}")


class Head(ABC):
    name: ClassVar[str]  # registry name: `pipe train --head NAME`
    task: ClassVar[str] = "regression"  # the task it solves (pipeline.train.tasks)
    Config: ClassVar[type]  # a dataclass; every field documented
    ABLATIONS: ClassVar[tuple[str, ...]] = ()  # names `--ablate` accepts (the config's `ablate` field)
    task_defaults: ClassVar[dict[str, Any]] = {}  # task settings it needs a value of, unless given (DSN: window)
    search_space: ClassVar[dict[str, tuple]] = {}  # `pipe tune`: name -> ("log"|"float"|"int", lo, hi) | ("cat", [...])
    small_data: ClassVar[dict[str, Any]] = {}  # config values of the small-data regime (pipeline/train/regime.py)
    paper_settings: ClassVar[dict[str, Any]] = {}  # config values `--set regime=paper` sets where the defaults left the paper
    target_transform: ClassVar[str] = "none"  # regression target scale unless --target-transform says (targets.py)
    on_dask: ClassVar[bool] = False  # trains on a dask cluster when --scheduler / --dask-workers are given

    def __init__(self, config: Any) -> None:
        self.config = config
        self.settings = RunSettings()  # how to run (device, threads, dask); set by train and score
        self.checkpoint: Checkpoint | None = None  # where a torch head's trainer keeps resumable state (set by train)
        self.model: Any = None  # the fitted model (None until fit or load)
        self.history: list[dict[str, Any]] = []  # validation curve, one entry per evaluation (logged by the run)
        check_ablations(self.name, self.ablate, self.ABLATIONS)
        self.check_config()

    @property
    def ablate(self) -> tuple[str, ...]:
        """The config's ablations (`--ablate`); () for a head whose config has none."""
        return tuple(getattr(self.config, "ablate", ()) or ())

    def ablated(self, what: str) -> bool:
        return what in self.ablate

    @property
    def seed(self) -> int:
        """The config's seed (weights, batch order; `--repeats` counts from it); 0 for a config without one."""
        return int(getattr(self.config, "seed", 0) or 0)

    @property
    def is_fitted(self) -> bool:
        """True once there is something to save or predict with (a head keeping no `model` overrides it)."""
        return self.model is not None

    @property
    def restored_step(self) -> int | None:
        """The training step whose weights the fitted model kept (0: its untrained start was
        never beaten on validation); None for a head fitted in one go."""
        return None

    @classmethod
    def saved_config(cls, saved: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The config a saved model recorded, and the task settings it recorded with it.

        Runs saved before tasks owned their settings (issue 18) kept `window`, `negatives` or
        `tags` in the head's config: those keys (the task's aliases the Config lacks) are
        split off, so such a model still loads; `adopt_task_settings` takes them."""
        from pipeline.core.config import config_from_dict, field_types
        from pipeline.train import tasks

        own = field_types(cls.Config)
        moved = {k: v for k, v in saved.items() if k in tasks.get(cls.task).ALIASES and k not in own}
        return config_from_dict(cls.Config, {k: v for k, v in saved.items() if k not in moved}), moved

    def adopt_task_settings(self, moved: dict[str, Any]) -> None:
        """Task settings an older saved model kept in its config (`saved_config`); a head whose
        fitted state depends on them (a window head's window) takes them here."""

    def check_config(self) -> None:
        """Raise PipeError for an invalid combination of settings."""

    def not_fitted(self) -> PipeError:
        return PipeError(f"head {self.name!r} is not trained; fit() or load() it first")

    @abstractmethod
    def roles(self) -> dict[str, Role]:
        """Feature roles this configuration reads (ablations may drop some)."""

    @abstractmethod
    def fit(self, train: HeadData, valid: HeadData, progress: Progress | None = None) -> "Head":
        """Fit on `train`, choosing what `valid` says; `progress` sees each validation
        evaluation as it happens (a head that evaluates only at the end leaves it uncalled
        and keeps its curve in `history`)."""

    @abstractmethod
    def predict(self, data: HeadData) -> Any:
        """The task's output for `data` (see the module docstring)."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the model without pickled code (safetensors-like torch state or text)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> "Head": ...

    def unseen_users(self, data: HeadData) -> Any:
        """(N,) bool: True for the posts (ranking: example rows) whose user the model never saw
        in training; None for a head that keeps no users (`pipe score` then judges from the
        run's training posts)."""
        return None

    def fit_notes(self) -> list[str]:
        """What the last fit found that a user should read (e.g. outputs that ended constant);
        `pipe train` says them and keeps repeat 0's in the run's notes. None by default."""
        return []

    def explain(self, data: HeadData) -> list[Explanation] | None:
        """One Explanation per post of `data`, in order; None for a head without attention.

        The one way commands see inside a model (`pipe explain`, `pipe rank --explain`):
        a head with attention overrides it; torch heads get it from their model's
        `details(batch)` (see pipeline.head.torch_head.TorchHead.explain)."""
        return None
