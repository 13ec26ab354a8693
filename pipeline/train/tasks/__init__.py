"""Task registry: one module per task (regression, ranking, embedding), each registered by name.

A task owns what one example is, how a dataset is split, the loss the shared trainer
minimizes, the validation criterion early stopping watches, the metrics, and what
`predict`, `pipe score` and `pipe evaluate` write. Every head names its task (`Head.task`).
"""
from __future__ import annotations

from pipeline.core.registry import Registry
from pipeline.train.tasks.base import Parts, Task

_registry: Registry[Task] = Registry("pipeline.train.tasks", "task")
register = _registry.register
names = _registry.names
get = _registry.get  # PipeError naming the known tasks for an unknown name


__all__ = ["Parts", "Task", "get", "names", "register"]
