#!/usr/bin/env bash
# benchmarks/gpu.py on the GPU machine, with that machine's own python3 and torch (README, Benchmarks).
#   bash benchmarks/gpu.sh wheels   here, where pip reaches a registry: what gpu.py imports that the GPU
#                                   machine lacks, as Python 3.12 wheels in .whl/ (~57 MB; carry it)
#   bash benchmarks/gpu.sh [ARGS]   there: installs .whl/ into /tmp/site, runs gpu.py --device cuda [ARGS];
#                                   the JSON goes to $OUT/gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="polars==2.1.0 polars-runtime-32==2.1.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4"
if [ "${1:-}" = wheels ]; then
  # shellcheck disable=SC2086
  exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu.py --device cuda "$@"
