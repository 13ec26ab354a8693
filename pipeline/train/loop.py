"""The one training loop every torch head shares (UHAN's protocol).

Adam by default (`optimizer`: adam | adagrad | sgd, pipeline/train/optim.py); evaluate
the task's validation criterion (MSE, AUC, mAP: a `Criterion`) every `eval_every`
batches (and once before the first step, so "no training helps" is a possible answer);
stop after `patience` evaluations without improvement or at `max_steps`; restore the
best weights. Batches are assembled
by a background thread (`Prefetcher`) from the feature stores' memory maps, `prefetch`
batches ahead, so the model never waits on I/O even when the grids are far larger than
RAM. On CPU a fixed seed gives bit-identical runs: one producer thread draws the batch
order from `numpy.random.default_rng(seed)` and the model's own randomness comes from
`torch.manual_seed(seed)`. With a `Checkpoint` the resumable state is saved at every
evaluation and a fit that finds one continues from it (pipeline/train/checkpoint.py).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.device import resolve_device, torch_threads
from pipeline.core.errors import PipeError
from pipeline.nn.device import batch_to_device
from pipeline.train.checkpoint import Checkpoint, FitState
from pipeline.train.data import RunSettings
from pipeline.train.optim import build_optimizer, check_optimizer

Batch = dict[str, torch.Tensor]


@dataclass
class TrainConfig:
    """Trainer fields; every torch head's Config inherits them (`--set key=value`)."""

    lr: float = 1e-3  # learning rate (Adam's other settings at their defaults, as UHAN)
    weight_decay: float = 0.0  # the optimizer's L2 penalty
    optimizer: str = "adam"  # adam | adagrad | sgd (pipeline/train/optim.py); papers differ: AMNL AdaGrad, DMAN SGD
    momentum: float = 0.0  # sgd only: momentum (DMAN's paper: 0.9)
    nesterov: bool = False  # sgd only: Nesterov momentum (needs momentum > 0)
    batch_size: int = 128  # posts per training batch (UHAN: 128)
    eval_every: int = 64  # training batches between two validation evaluations (UHAN: 64)
    patience: int = 20  # evaluations without improvement before stopping (UHAN: 20)
    max_steps: int | None = None  # hard cap on training batches; None = until patience runs out
    seed: int = 0  # seeds weight init, batch order and any training-time masking
    regime: str = "auto"  # auto: small-data settings below 20K training examples (pipeline/train/regime.py) | small | paper
    # device, threads and prefetch are run settings (pipeline.train.data.RunSettings), not model settings


@dataclass
class Source:
    """`n` examples; `assemble(rows)` returns one batch of numpy arrays for those rows.

    `assemble` runs in the loader thread, so it must only read (stores, arrays), never
    touch the model. A batch holds a float32 `y` when the source is used for training.
    """

    n: int  # number of examples
    assemble: Callable[[np.ndarray], dict[str, np.ndarray]]  # rows -> one batch of arrays
    y: np.ndarray | None = None  # (n,) targets, needed for validation without re-reading features

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], y: np.ndarray | None = None) -> "Source":
        """Examples held in memory, one row of each array apiece: a batch is {name: array[rows]}."""
        n = len(next(iter(arrays.values()))) if arrays else 0
        return cls(n, lambda rows: {k: v[rows] for k, v in arrays.items()}, y)

    def materialize(self) -> "Source":
        """The same examples held in memory (the benchmark's upper bound): batches are plain
        in-RAM gathers, converted to tensors exactly as the store's batches are."""
        return Source.from_arrays({k: np.ascontiguousarray(v) for k, v in self.assemble(np.arange(self.n)).items()},
                                  self.y)


@dataclass
class Criterion:
    """What early stopping watches: a metric of the model's validation outputs."""

    name: str  # metric name: history entries are `valid_<name>`
    value: Callable[[np.ndarray], float]  # validation outputs -> the metric, in its own units
    higher_is_better: bool = False


def mse_criterion(y: np.ndarray) -> Criterion:
    """Validation MSE against targets y (the regression task's criterion)."""
    y64 = np.asarray(y, np.float64)
    return Criterion("mse", lambda pred: float(np.mean((pred.astype(np.float64) - y64) ** 2)))


@dataclass
class TrainResult:
    history: list[dict[str, Any]]  # per evaluation: step, valid_<criterion>, train_loss (+ train_<term>), seconds (None: not finite / none yet)
    best_step: int  # training batches done when the restored weights were evaluated
    best_valid: float  # the validation criterion of the restored weights
    criterion: str  # its name (mse, auc, map)
    steps: int  # training batches done in all
    stop_reason: str  # "patience" or "max_steps"
    train_seconds: float  # wall time of the training loop minus evaluations (batch waits included)
    samples_per_s: float  # training samples seen / train_seconds

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _to_tensors(arrays: dict[str, np.ndarray], device: torch.device) -> Batch:
    """numpy -> torch in the loader thread. On CPU float16 becomes float32 here with numpy
    (single-threaded: no second OpenMP team competing with the model's); on a GPU it is
    copied as float16 from pinned memory and converted there."""
    out = {}
    for k, v in arrays.items():
        if device.type == "cpu":
            out[k] = torch.from_numpy(np.ascontiguousarray(v, np.float32 if v.dtype == np.float16 else None))
        else:
            out[k] = torch.from_numpy(np.ascontiguousarray(v)).pin_memory()
    return out


class Prefetcher:
    """Iterate assembled batches for `row_batches`, built by one background thread `depth` ahead.

    One producer keeps the order deterministic; errors in the thread re-raise in the
    consumer; `close()` (or leaving a `with` block) stops the thread promptly.
    """

    _END = object()

    def __init__(self, source: Source, row_batches: Iterable[np.ndarray], device: torch.device, depth: int) -> None:
        self.source, self.rows, self.device, self.depth = source, row_batches, device, depth
        self._stop = threading.Event()
        self._q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread: threading.Thread | None = None

    def _produce(self) -> None:
        try:
            for rows in self.rows:
                item = _to_tensors(self.source.assemble(rows), self.device)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final(self._END)
        except BaseException as e:  # handed to the consumer
            self._put_final(e)

    def _put_final(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Batch]:
        if self.depth <= 0:  # inline: no thread
            for rows in self.rows:
                yield batch_to_device(_to_tensors(self.source.assemble(rows), self.device), self.device)
            return
        self._thread = threading.Thread(target=self._produce, name="pipe-loader", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._q.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield batch_to_device(item, self.device)
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _chunks(n: int, size: int) -> Iterator[np.ndarray]:
    for i in range(0, n, size):
        yield np.arange(i, min(i + size, n))


def _epochs(n: int, size: int, permutation: Callable[[int], np.ndarray]) -> Iterator[np.ndarray]:
    """Endless shuffled passes over n examples (the last batch of a pass may be short)."""
    while True:
        perm = permutation(n)
        for i in range(0, n, size):
            yield perm[i : i + size]


def mse_loss(pred: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.mse_loss(pred, batch["y"])


def _finite(v: float) -> float | None:
    return v if np.isfinite(v) else None  # the history stays strict JSON


@dataclass
class Trainer:
    """Fit a model `model(batch) -> outputs` on a training Source, early-stopped on a valid one."""

    config: TrainConfig
    settings: RunSettings = field(default_factory=RunSettings)  # device, threads, prefetch
    loss_fn: Callable[[torch.Tensor, Batch], Any] = mse_loss  # training loss (the task's): a tensor, or named terms {name: tensor} summed
    criterion: Criterion | None = None  # None: MSE against the validation Source's y
    progress: Callable[[dict[str, Any]], None] | None = None  # called with each history entry
    on_step: Callable[[int, float], None] | None = None  # (samples, seconds) of each training step, batch wait included
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None  # model -> optimizer groups (TorchHead.param_groups)
    shuffle: Callable[[int], np.ndarray] | None = None  # n -> one epoch's order; None: numpy default_rng(config.seed)
    eval_batch: int | None = None  # examples per prediction batch; None: config.batch_size
    checkpoint: Checkpoint | None = None  # resumable state, saved at every evaluation; a fit resumes from it when present
    device: torch.device = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        for name, value in (("batch_size", c.batch_size), ("eval_every", c.eval_every), ("patience", c.patience)):
            if value < 1:
                raise PipeError(f"trainer setting {name} must be >= 1, got {value}")
        if c.max_steps is not None and c.max_steps < 0:
            raise PipeError(f"trainer setting max_steps must be >= 0 or None, got {c.max_steps}")
        check_optimizer(c.optimizer, c.momentum, c.nesterov)
        self.device = torch.device(resolve_device(self.settings.device))

    def apply(self, model: nn.Module, source: Source, fn: Callable[[Batch], Any]) -> list[Any]:
        """`fn(batch)` of every batch of `source`, in order: eval mode, no gradients, the batches
        prefetched onto the run's device (predictions, attention maps)."""
        model.eval()
        s = self.settings
        with torch_threads(s.threads), torch.no_grad(), \
                Prefetcher(source, _chunks(source.n, self.eval_batch or self.config.batch_size), self.device,
                           s.prefetch) as pf:
            return [fn(batch) for batch in pf]

    def predict(self, model: nn.Module, source: Source, fn: Callable[[Batch], torch.Tensor] | None = None
                ) -> np.ndarray:
        """`fn(batch)` (default `model(batch)`) for every example of `source`, in order (float32)."""
        fn = fn or model
        outs = self.apply(model, source, lambda batch: fn(batch).float().cpu())
        return torch.cat(outs).numpy().astype(np.float32) if outs else np.zeros(0, np.float32)

    def fit(self, model: nn.Module, train: Source, valid: Source) -> TrainResult:
        with torch_threads(self.settings.threads):
            return self._fit(model, train, valid)

    def _criterion(self, valid: Source) -> Criterion:
        if self.criterion is not None:
            return self.criterion
        if valid.y is None or len(valid.y) != valid.n:
            raise ValueError("the validation Source needs y, one target per example")
        return mse_criterion(valid.y)

    def _batches(self, n: int) -> Iterator[np.ndarray]:
        """Training row batches: shuffled epochs, in the order `shuffle` (or the config's seed) draws."""
        return _epochs(n, self.config.batch_size, self.shuffle or np.random.default_rng(self.config.seed).permutation)

    def _fit(self, model: nn.Module, train: Source, valid: Source) -> TrainResult:
        c = self.config
        if train.n == 0 or valid.n == 0:
            raise PipeError(f"cannot train: the training part has {train.n} posts and the validation part {valid.n}")
        crit = self._criterion(valid)
        model.to(self.device)
        params = self.param_groups(model) if self.param_groups is not None else model.parameters()
        opt = build_optimizer(params, c)
        batches = self._batches(train.n)
        run = FitState(crit, -1.0 if crit.higher_is_better else 1.0)
        saved = self.checkpoint.load() if self.checkpoint is not None else None
        stop: str | None = None
        if saved is None:
            run.best = self._evaluate(model, valid, run, [])  # step 0: "no training helps" is a possible answer
            run.best_state = copy.deepcopy(model.state_dict())
        else:  # resumed: where the last evaluation left it; the batches already trained on are skipped
            stop = run.restore(saved, model, opt)
        sync = torch.cuda.synchronize if self.device.type == "cuda" and self.on_step is not None else None
        losses: list[torch.Tensor] = []
        run.start_training()
        if saved is None:
            self._report(run)
        try:
            if c.max_steps != 0 and stop is None:
                with Prefetcher(train, itertools.islice(batches, run.step, None), self.device,
                                self.settings.prefetch) as pf:
                    ts = time.perf_counter()
                    for batch in pf:
                        losses.append(self._step(model, opt, batch, run))  # no host sync per step
                        rows = len(next(iter(batch.values())))
                        run.step += 1
                        run.seen += rows
                        if self.on_step is not None:
                            if sync is not None:
                                sync()
                            self.on_step(rows, time.perf_counter() - ts)
                        at_cap = c.max_steps is not None and run.step >= c.max_steps
                        if run.step % c.eval_every == 0 or at_cap:
                            run.keep_if_best(self._evaluate(model, valid, run, losses), model)
                            losses = []
                            stop = "patience" if run.bad >= c.patience else "max_steps" if at_cap else None
                            if self.checkpoint is not None:
                                self.checkpoint.save(run.saved(model, opt, stop))
                            self._report(run)
                            if stop is not None:
                                break
                        ts = time.perf_counter()
        except BaseException:  # Ctrl-C, SIGTERM, an error: the model keeps the best weights so far
            model.load_state_dict(run.best_state)
            model.eval()
            raise
        # Evaluations end with a host copy, so this wall time also counts queued GPU work.
        train_s = run.train_seconds()
        model.load_state_dict(run.best_state)
        model.eval()
        return TrainResult(
            history=run.history,
            best_step=run.best_step,
            best_valid=run.sign * run.best if np.isfinite(run.best) else float("nan"),
            criterion=crit.name,
            steps=run.step,
            stop_reason=stop or "max_steps",
            train_seconds=train_s,
            samples_per_s=(run.seen / train_s) if train_s > 0 else 0.0,
        )

    def _step(self, model: nn.Module, opt: torch.optim.Optimizer, batch: Batch, run: FitState) -> torch.Tensor:
        """One optimizer step on a batch; its loss (then its named terms, when the loss has
        them), still on the device."""
        model.train()
        opt.zero_grad(set_to_none=True)
        out = self.loss_fn(model(batch), batch)
        terms = out if isinstance(out, dict) else {}
        loss = sum(terms.values()) if terms else out
        run.terms = tuple(terms)
        loss.backward()
        opt.step()
        return torch.stack([loss.detach(), *(t.detach() for t in terms.values())])

    def _evaluate(self, model: nn.Module, valid: Source, run: FitState, losses: list[torch.Tensor]) -> float:
        """Evaluate, record the history entry; the criterion as a loss (inf when not finite, so a
        diverged model never counts as best)."""
        te = time.perf_counter()
        value = run.crit.value(self.predict(model, valid))
        mean = torch.stack(losses).mean(0).tolist() if losses else [None] * (1 + len(run.terms))
        run.history.append({
            "step": run.step,
            f"valid_{run.crit.name}": _finite(value),
            "train_loss": _finite(mean[0]) if losses else None,
            **{f"train_{k}": _finite(v) if losses else None for k, v in zip(run.terms, mean[1:])},
            "seconds": round(time.perf_counter() - run.t0, 3),
        })
        run.eval_s += time.perf_counter() - te
        return run.sign * value if np.isfinite(value) else float("inf")

    def _report(self, run: FitState) -> None:
        """The latest evaluation to `progress`, with what a watcher wants: best so far, evaluations
        left before early stopping, training speed and the time left to max_steps."""
        if self.progress is None:
            return
        c = self.config
        spent = run.train_seconds()
        rate = run.step / spent if spent > 0 and run.step else None
        self.progress({**run.history[-1], "best": _finite(run.sign * run.best), "best_step": run.best_step,
                       "evals_left": c.patience - run.bad,
                       "samples_per_s": round(run.seen / spent, 1) if rate else None,
                       "eta_seconds": round((c.max_steps - run.step) / rate, 1) if rate and c.max_steps else None})
