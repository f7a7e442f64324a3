#!/usr/bin/env bash
# Run the CUDA checks and the GPU benchmark on a machine with an NVIDIA GPU, from the repo root:
#   bash bench/on_gpu.sh [RESULTS_DIR]
# 1. the CUDA-path tests (skipped on machines without CUDA, so CI never runs them);
# 2. bench/gpu.py (ResNet-50 training and interpolation throughput) -> RESULTS_DIR/gpu.json;
# 3. the same training with torch.compile -> RESULTS_DIR/gpu_compile.json;
# 4. the micro study end to end on the GPU, timed;
# 5. bench/input_pipeline.py: training images/s from 20,000 generated JPEGs (DomainNet layout)
#    decoded on the GPU and in CPU workers, vs synthetic tensors -> RESULTS_DIR/input_pipeline.json.
# ONLY=input_pipeline bash bench/on_gpu.sh runs step 5 alone (about 3 minutes on an H200).
set -u
out=${1:-bench/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
if [ "${ONLY:-}" != input_pipeline ]; then
timeout 200 $PY -m pytest -q -p no:cacheprovider tests/test_gpu_paths.py 2>&1 | tail -15
timeout 200 $PY -m bench.gpu > "$out/gpu.json"; cat "$out/gpu.json"
timeout 200 $PY - > "$out/gpu_compile.json" <<'PYEOF'
import json, torch
from bench.gpu import FULL, train_throughput
r = train_throughput(FULL, torch.device("cuda"), channels_last=True, bf16=True, compile=True)
print(json.dumps({"name": "gpu_compile", "sizes": FULL, "train_bf16_channels_last_compiled": r}))
PYEOF
cat "$out/gpu_compile.json"
start=$(date +%s)
timeout 200 $PY -m transferscope run --preset micro --device cuda --out /tmp/micro-gpu --quiet 2>&1 | tail -5
echo "micro study on the GPU: $(( $(date +%s) - start )) s"
ls /tmp/micro-gpu/report* 2>/dev/null
fi
timeout 420 $PY -m pytest -q -p no:cacheprovider tests/test_gpu_pipeline.py 2>&1 | tail -3
timeout 480 $PY -m bench.input_pipeline > "$out/input_pipeline.json"; cat "$out/input_pipeline.json"
