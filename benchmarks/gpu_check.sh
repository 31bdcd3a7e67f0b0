#!/usr/bin/env bash
# The GPU check: what a student's Colab session would run, on a CUDA machine with no
# network. Installs tinyformer and the notebook tools from wheels in .whl (never
# torch: the machine's own is used), then runs
#   1. the unit and property tests (the CUDA ones included),
#   2. every chapter's twin under the gpu profile, saving the executed notebooks
#      and every number a chapter glues into its prose,
#   3. the attention benchmark in bfloat16, with our fast path under torch.compile,
#      MultiHeadAttention beside nn.MultiheadAttention, the per-call overhead
#      at a tiny size, and a training step of the paper's base Transformer beside
#      nn.Transformer's (bf16 autocast), and chunked attention's peak memory.
# Make the wheels first, here: bash benchmarks/gpu_wheels.sh
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]     (logs and results go to OUT_DIR)
set -uo pipefail
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
# A stand-in for myst_nb's glue that records each glued number (the book's build
# has the real one); it comes first on the chapters' path.
mkdir -p /tmp/glue/myst_nb
cat > /tmp/glue/myst_nb/__init__.py <<'PY'
import json, os
def glue(name, value, display=True):
    with open(os.environ["GLUE_LOG"], "a") as log:
        log.write(json.dumps({"name": name, "value": repr(value)}) + "\n")
PY
export PYTHONPATH=/tmp/site MPLBACKEND=Agg PYTHONUNBUFFERED=1
unset TINYFORMER_PROFILE
python3 -c "import torch, tinyformer; print('torch', torch.__version__, torch.cuda.get_device_name(), 'profile', tinyformer.profile())"
status=0

echo "== unit and property tests, in the background (mostly CPU work)"
python3 -m pytest -q -p no:cacheprovider tests -x > "$out/tests.log" 2>&1 &
tests=$!

echo "== chapters under the gpu profile"
for twin in notebooks/[0-9]*.ipynb; do
  name=$(basename "$twin" .ipynb)
  GLUE_LOG="$out/$name.glue.jsonl" PYTHONPATH=/tmp/glue:/tmp/site python3 - "$twin" "$out/$name.ipynb" <<'PY' || status=1
import sys, time, nbformat
from nbclient import NotebookClient
notebook = nbformat.read(sys.argv[1], as_version=4)
start = time.perf_counter()
try:
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": "notebooks"}}).execute()
    print(f"{sys.argv[1]}: ran in {time.perf_counter() - start:.1f} s")
finally:
    nbformat.write(notebook, sys.argv[2])
PY
  cat "$out/$name.glue.jsonl" 2>/dev/null
done

wait $tests || status=1
echo "== unit and property tests"; tail -5 "$out/tests.log"

echo "== attention benchmark, bfloat16"
python3 benchmarks/attention.py --device cuda --dtype bfloat16 --lengths 1024 4096 8192 \
  --batch 4 --heads 16 --head-dim 64 --compile 2>&1 | grep -v Warning \
  | tee "$out/benchmark.log" || status=1
echo "== MultiHeadAttention beside nn.MultiheadAttention, bfloat16"
python3 benchmarks/multihead.py --device cuda --dtype bfloat16 2>&1 \
  | tee "$out/multihead.log" || status=1
echo "== per-call overhead at a tiny size (1, 1, 8, 16), float32"
python3 benchmarks/attention.py --device cuda --lengths 8 --batch 1 --heads 1 \
  --head-dim 16 --min-time 0.5 2>&1 | tee "$out/overhead.log" || status=1
echo "== training throughput, the paper's base model, bf16 autocast"
python3 benchmarks/transformer.py --device cuda 2>&1 | tee "$out/transformer.log" || status=1
echo "== chunked attention's peak memory and time, one head, n = 65536, bf16"
python3 benchmarks/efficient.py --device cuda --dtype bfloat16 --length 65536 \
  --chunk-size 1024 2>&1 | tee "$out/efficient.log" || status=1
exit $status
