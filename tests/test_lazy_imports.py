"""`pipe train` without `--finetune` does not import the fine-tuning stack (torchvision and
torch's compiler, 2-20 s per run, issue 21): a fresh interpreter loads the CLI, the run
plan, every head and every task, and neither is in sys.modules."""
from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import sys
import heads
import pipeline.cli, pipeline.run.train
from pipeline.train import tasks
for n in heads.names():
    heads.get(n)
for n in tasks.names():
    tasks.get(n)
print(sorted(m for m in ("torchvision", "torch._dynamo") if m in sys.modules))
"""


@pytest.mark.slow
def test_train_imports_no_finetuning_stack():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
