"""`TorchHead`: Head.fit/predict/save/load for any torch model, on top of the shared trainer.

A subclass provides `Config` (a dataclass inheriting `TrainConfig`), `roles()`,
`build_model()` (an `nn.Module` with `forward(batch)`, built from `self.config` and
`self.meta`), `assemble(cols, rows)` (numpy arrays of one batch; runs in the loader
thread) and optionally `prepare(train)` (statistics of the training part into
`self.meta`, which must stay JSON). The task (`task`) gives the loss, the validation
criterion and the output: regression heads return (B,) and `targets` is the posts'
target column; heads of other tasks override `targets` (what a batch's `y` holds) and
`output` (raw model outputs -> the task's `predict` value). The base class fits the user
vocabulary (`self.users` over `fit_users`, row 0 = unseen user), checks roles and labels, trains, and
saves `head.json` (config, meta, history) + `model.pt` (a state dict, loaded with
`weights_only=True`: no pickled code is ever executed). Run settings are not saved.

A run may set `wrapper` (a `ModelWrapper`) to train the built model inside another module
(`pipe train --finetune`: the image backbone before it) without touching the head's code.
"""
from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pipeline.head.base import Explanation, Head, HeadData, Progress, Role
from pipeline.head.explain import Detailed, explain_torch
from pipeline.nn.layers import TextConfig, UserVocab
from pipeline.core.config import config_to_dict
from pipeline.core.errors import PipeError
from pipeline.core.io import atomic_write_bytes
from pipeline.store import FeatureStore
from pipeline.train import tasks
from pipeline.train.loop import Criterion, Source, TrainConfig, Trainer
from pipeline.train.regime import TRAIN_SPACE

META_FILE, WEIGHTS_FILE = "head.json", "model.pt"


class PartRows:
    """A role's rows for a part's posts, located in the store once per part (not per batch):
    a batch is then an index gather straight from the memory maps, with no id lookup (issue
    21). A post the store lacks reads as zeros, flagged in the present mask."""

    def __init__(self, store: Any, ids: list[str]) -> None:
        self.store = store
        if isinstance(store, FeatureStore):
            self.pos: np.ndarray | None = store.positions(ids)  # (P,) int64 store rows, -1 where missing
            self.present = self.pos >= 0
            self.ids = None
        else:  # a store-like role (uploaded images, a serving memory): read by id
            self.pos, self.ids = None, np.array(ids, dtype=object)
            self.present = np.fromiter((p in store for p in ids), bool, len(ids))

    def _fetch(self, rows: np.ndarray) -> np.ndarray:
        return self.store.read_rows(self.pos[rows]) if self.pos is not None else self.store.read(self.ids[rows].tolist())

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the store for posts `rows`, zeros where missing; the present mask)."""
        ok = self.present[rows]
        if ok.all():
            return self._fetch(rows), ok
        out = np.zeros((len(rows), *self.store.spec.shape), np.dtype(self.store.spec.dtype))
        if ok.any():
            out[ok] = self._fetch(rows[ok])
        return out, ok


@dataclass
class PostRows:
    """A part's posts in order, their store rows located once per role on first use."""

    data: HeadData
    ids: list[str]  # post ids in order
    _located: dict[str, PartRows] = field(default_factory=dict, init=False, repr=False, compare=False)

    def read(self, role: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of `role` for the posts at `rows` (zeros where the store has none) and the present mask."""
        if role not in self._located:
            self._located[role] = PartRows(self.data.stores[role], self.ids)
        return self._located[role].read(rows)


@dataclass
class Columns(PostRows):
    """Per-part columns computed once (the loader thread only indexes them)."""

    users: np.ndarray  # (N,) int64 user rows, 0 = not seen in training
    y: np.ndarray | None  # (N,) float32 targets (or (N, L) for multi-label), None when predicting


def sample_ids(store: Any, ids: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Up to `n` of `ids` that `store` holds, drawn with `rng`, in their order (training statistics)."""
    have = [p for p in ids if p in store]
    return [have[i] for i in np.sort(rng.permutation(len(have))[:n])]


def rms_scale(store: Any, ids: list[str], n: int, rng: np.random.Generator) -> float:
    """1 / RMS of the rows of a sample of up to `n` of `ids` (1 without any): a train-only scalar."""
    sample = sample_ids(store, ids, n, rng)
    ms = float(np.mean(np.square(store.read(sample).astype(np.float64)))) if sample else 0.0
    return 1.0 / np.sqrt(ms) if ms > 0 else 1.0


@dataclass
class VisualOptions:
    """The visual-input option of a torch head's config (`--set normalize_visual=false`)."""

    normalize_visual: bool = True  # scale the visual rows by 1/RMS of the training rows (a train-only scalar)


class ModelWrapper(ABC):
    """Trains a head's model inside another module: `TorchHead.fit` builds the head's model,
    trains `wrap(model)` in its place with `param_groups`; the run unwraps it after."""

    @abstractmethod
    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train in place of the head's freshly built `model`."""

    @abstractmethod
    def param_groups(self, wrapped: nn.Module, head_groups: Callable[[nn.Module], list[dict[str, Any]]]
                     ) -> list[dict[str, Any]]:
        """The optimizer's groups of `wrapped`; `head_groups` gives those of the head's own model."""


class TorchHead(Head):
    Config = TrainConfig
    search_space = TRAIN_SPACE  # the trainer's lr and weight_decay, unless a head declares its own space

    def __init__(self, config: Any = None) -> None:
        super().__init__(config if config is not None else self.Config())
        self.model: nn.Module | None = None
        self.meta: dict[str, Any] = {}  # fitted on the training part; JSON-ready
        self.users: UserVocab | None = None
        self.train_info: dict[str, Any] = {}  # best_step, steps, stop_reason, samples_per_s, ...
        self.wrapper: ModelWrapper | None = None  # set by the run to train the model inside another (--finetune)

    @property
    def text_options(self) -> TextConfig:
        """The config's text-encoder options, or their defaults (the paper's encoder) for a config without them."""
        return self.config if isinstance(self.config, TextConfig) else TextConfig()

    @property
    def restored_step(self) -> int | None:
        """The step of the weights early stopping restored (the trainer's `best_step`)."""
        return self.train_info.get("best_step")

    # -- what a subclass provides -----------------------------------------------------
    def fit_users(self, train: HeadData) -> list[Any]:
        """The user ids that get an embedding row (`self.users`): the training posts' users."""
        return train.posts["user_id"].to_list()

    def prepare(self, train: HeadData) -> None:
        """Fit training-part statistics into self.meta (vocabulary sizes, scales, ...)."""

    @abstractmethod
    def build_model(self) -> nn.Module: ...

    @abstractmethod
    def assemble(self, cols: Columns, rows: np.ndarray) -> dict[str, np.ndarray]: ...

    def targets(self, data: HeadData) -> np.ndarray:
        """What a training batch's `y` holds: the regression target, finite for every post."""
        y = data.y
        bad = ~np.isfinite(y)
        if bad.any():
            ids = [data.ids[i] for i in np.nonzero(bad)[0][:5]]
            raise PipeError(f"{int(bad.sum())} posts have no finite {data.target!r}, e.g. {ids}")
        return y

    def output(self, data: HeadData, raw: np.ndarray) -> Any:
        """Raw model outputs for `data` -> the task's predict value (regression: as they are)."""
        return raw

    def loss(self, task: tasks.Task) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
        """The training loss: the task's, unless a paper defines its own."""
        return task.loss

    # -- helpers for subclasses -----------------------------------------------------------
    def read(self, cols: PostRows, role: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of `role` for rows (zeros where the store has none) and the present mask."""
        return cols.read(role, rows)

    def base_batch(self, cols: Columns, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The fields every head gets: `user` rows and, when known, `y`."""
        out = {"user": cols.users[rows]}
        if cols.y is not None:
            out["y"] = cols.y[rows]
        return out

    def columns(self, data: HeadData, with_y: bool) -> Columns:
        self._check_roles(data)
        if self.users is None:
            raise self.not_fitted()
        y = self.targets(data) if with_y else None
        return Columns(data, data.ids, self.users.encode(data.posts["user_id"].to_list()), y)

    def source(self, data: HeadData, with_y: bool, training: bool = False) -> Source:
        """The batches of `data`; `training`: those of the part being fitted (a head may shape
        them otherwise, e.g. a ranking head's groups)."""
        cols = self.columns(data, with_y)
        return Source(len(data), lambda rows: self.assemble(cols, rows), cols.y)

    def _check_roles(self, data: HeadData) -> None:
        for role, spec in self.roles().items():
            store = data.stores.get(role)
            if store is None:
                if spec.required:
                    raise PipeError(f"head {self.name!r} needs a store for role {role!r} ({'|'.join(spec.kinds)})")
                continue
            if store.spec.kind not in spec.kinds:
                raise PipeError(
                    f"head {self.name!r}: role {role!r} takes {'|'.join(spec.kinds)} features, "
                    f"but {store.extractor_id} holds {store.spec.kind}"
                )

    # -- Head interface ---------------------------------------------------------------------
    def fit(self, train: HeadData, valid: HeadData, progress: Progress | None = None) -> "TorchHead":
        c = self.config
        task = tasks.get(self.task)(train.target)
        torch.manual_seed(c.seed)
        self.users = UserVocab.fit(self.fit_users(train))
        self.meta = {"users": self.users.to_json()}
        self.prepare(train)  # before the sources: targets may depend on fitted vocabularies
        train_src, valid_src = self.source(train, True, training=True), self.source(valid, True)
        self.meta.update(task.fitted_meta(train_src.y if len(train) else None))  # regression: y_mean
        criterion = Criterion(task.criterion, task.criterion_fn(valid, valid_src.y, lambda raw: self.output(valid, raw)),
                              task.higher_is_better)
        model = self.build_model()
        self.model = self.wrapper.wrap(model) if self.wrapper is not None else model
        groups = self.param_groups if self.wrapper is None else partial(self.wrapper.param_groups,
                                                                          head_groups=self.param_groups)
        trainer = Trainer(c, self.settings, self.loss(task), criterion, progress=progress, param_groups=groups,
                          checkpoint=self.checkpoint)
        result = trainer.fit(self.model, train_src, valid_src)
        self.history = result.history
        self.train_info = {k: v for k, v in result.to_json().items() if k != "history"}
        return self

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimizer's parameter groups, the one place every torch head gets them from:
        the token text encoders' embedding + LSTM take `text_weight_decay` (when the config
        has one) and the rest `weight_decay`, since the text part is what memorizes a small
        training part (issue 9); frozen parameters are left out. A head (or a fine-tuned
        backbone) with other needs overrides this and may give a group its own `lr`."""
        from pipeline.nn.layers import TextEncoder

        c = self.config
        text_wd = self.text_options.text_weight_decay
        text: set[int] = set()
        if text_wd is not None:
            text = {id(p) for m in model.modules() if isinstance(m, TextEncoder) for p in m.parameters()}
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in text], "weight_decay": c.weight_decay},
                  {"params": [p for p in params if id(p) in text], "weight_decay": text_wd}]
        return [g for g in groups if g["params"]]

    def predict(self, data: HeadData) -> Any:
        if self.model is None:
            raise self.not_fitted()
        empty = tasks.get(self.task)(data.target).empty_output(data)
        if empty is not None:
            return empty
        return self.output(data, self.run_model(data))

    def evaluator(self) -> Trainer:
        """The shared trainer for passes over data (predict, explain), the model on the run's device."""
        trainer = Trainer(self.config, self.settings)
        self.model.to(trainer.device)
        return trainer

    def run_model(self, data: HeadData, fn: Callable[[Any], torch.Tensor] | None = None) -> np.ndarray:
        """Raw outputs of the model (or of `fn`, e.g. `model.embed`) over `data`, in order, on the run's device."""
        return self.evaluator().predict(self.model, self.source(data, False), fn=fn)

    def unseen_users(self, data: HeadData) -> np.ndarray:
        """True for posts whose user was not in the training part (they get the unknown-user row)."""
        if self.users is None:
            raise self.not_fitted()
        return self.users.encode(data.posts["user_id"].to_list()) == 0

    def explain(self, data: HeadData) -> "list[Explanation] | None":
        """The maps the model's `details(batch)` returns (pipeline/head/explain.py says which);
        None when the model is not `Detailed`."""
        if self.model is None:
            raise self.not_fitted()
        if not isinstance(self.model, Detailed):
            return None
        return explain_torch(self, data, self.attended(data))

    def attended(self, data: HeadData) -> list[list[str | None]] | None:
        """Per post of `data`, the post at each position its model attends over (a sequence
        head's window; None: padding); None for a head attending over no other post."""
        return None

    def save(self, directory: Path) -> None:
        if self.model is None:
            raise self.not_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        buf = io.BytesIO()  # a full disk is an OSError naming the file, never a half-written model
        torch.save(state, buf)
        atomic_write_bytes(d / WEIGHTS_FILE, buf.getvalue())
        doc = {
            "head": self.name,
            "config": config_to_dict(self.config),
            "meta": self.meta,
            "history": self.history,
            "train": self.train_info,
        }
        (d / META_FILE).write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, directory: Path) -> "TorchHead":
        d = Path(directory)
        try:
            doc = json.loads((d / META_FILE).read_text())
        except FileNotFoundError:
            raise PipeError(f"no saved {cls.name!r} head in {d} (missing {META_FILE})") from None
        if doc.get("head") != cls.name:
            raise PipeError(f"{d} holds a {doc.get('head')!r} head, not {cls.name!r}")
        config, moved = cls.saved_config(doc["config"])
        head = cls(config)
        head.meta, head.history, head.train_info = doc["meta"], doc.get("history", []), doc.get("train", {})
        head.adopt_task_settings(moved)
        head.users = UserVocab.from_json(head.meta["users"])
        head.model = head.build_model()
        state = torch.load(d / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        head.model.load_state_dict(state)
        head.model.eval()
        return head


class VisualTextHead(TorchHead):
    """A TorchHead reading a `visual` store (grid/vector), a `text` tokens store and the user.

    Batches carry `user`, `y`, `visual` (B, *shape) with `visual_present` (B,) (zeros and
    False for a post without a usable image) and `tokens` (B, L). `prepare` records the
    grid shape, the token ids the store can hold and those the training posts use, and, when the config asks for
    it, `visual_scale`: 1 / RMS of the training grids (a train-only scalar that keeps
    tanh projections out of saturation whatever the backbone's output range).
    A role named in the config's `ablate` is not read at all. `text_encoder()` builds the
    shared LSTM encoder from this meta.
    """

    visual_role = Role(("grid",), "vgg16-pool5-448", modality="image")
    text_role = Role(("tokens",), "tokens", modality="text")
    ABLATIONS: tuple[str, ...] = ("visual", "text")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._word_init: np.ndarray | None = None  # fixed word vectors' initial rows (prepare), for build_model

    def check_config(self) -> None:
        if self.ablated("visual") and self.ablated("text"):
            raise PipeError(f"head {self.name!r}: ablating both visual and text leaves no modality")

    def roles(self) -> dict[str, Role]:
        out = {}
        if not self.ablated("visual"):
            out["visual"] = self.visual_role
        if not self.ablated("text"):
            out["text"] = self.text_role
        return out

    @property
    def normalize_visual(self) -> bool:
        """The config's `normalize_visual` (VisualOptions); False for a config without it."""
        return isinstance(self.config, VisualOptions) and self.config.normalize_visual

    def prepare(self, train: HeadData) -> None:
        from pipeline.nn.layers import known_tokens, text_vocab_size

        roles = self.roles()
        if "visual" in roles:
            store = train.stores["visual"]
            self.meta["visual_shape"] = list(store.spec.shape)
            self.meta["visual_scale"] = (rms_scale(store, train.ids, 256, np.random.default_rng(self.config.seed))
                                         if self.normalize_visual else 1.0)
        if "text" in roles:
            tokens, _ = train.features("text")
            c = self.text_options
            self.meta["vocab_size"] = text_vocab_size(train.stores["text"], tokens)
            self.meta["known_tokens"] = known_tokens(tokens, c.max_vocab)
            if c.word_vectors:  # the initial rows only: the weights are saved with the model
                from pipeline.nn.word_vectors import init_for_tokens

                self._word_init, found = init_for_tokens(train.stores["text"], self.meta["known_tokens"],
                                                         c.word_vectors, self.seed)
                self.meta["embed_dim"] = int(self._word_init.shape[1])
                self.meta["word_vectors_found"] = f"{found}/{len(self.meta['known_tokens'])}"

    def text_encoder(self, dim: int) -> "nn.Module | None":
        from pipeline.nn.layers import TextEncoder

        if "vocab_size" not in self.meta:
            return None
        c = self.text_options
        return TextEncoder(self.meta["vocab_size"], dim, self.meta["known_tokens"], embed_dim=self.meta.get("embed_dim"),
                           init=self._word_init, freeze=c.freeze_embeddings, word_dropout=c.word_dropout,
                           embed_dropout=c.embed_dropout)

    def assemble(self, cols: Columns, rows: np.ndarray) -> dict[str, np.ndarray]:
        out = self.base_batch(cols, rows)
        roles = self.roles()
        if "visual" in roles:
            out["visual"], out["visual_present"] = self.read(cols, "visual", rows)
        if "text" in roles:
            out["tokens"] = self.read(cols, "text", rows)[0]
        return out
