#!/usr/bin/env bash
# One device call: GPU tests, gsplat 1.4.0 build, and the GPU benchmark. Logs go to $OUT.
# Expects wheels in .whl/ (plyfile, gsplat 1.4.0 and its missing deps) and the scenes in .scenes/.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH SPLATTER_SCENES=$PWD/.scenes PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import cupy, numba, torch; print('cupy', cupy.__version__, 'numba', numba.__version__, 'torch', torch.__version__)"
stage=${1:-all}
if [ "$stage" = all ] || [ "$stage" = tests ]; then
  python3 -m pytest -q -x tests/test_gpu_backend.py tests/test_golden.py tests/test_stages.py 2>&1 | tee "$OUT/tests.log"
fi
if [ "$stage" = all ] || [ "$stage" = bench ]; then
  export MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 TORCH_EXTENSIONS_DIR=$PWD/.gsplat_build
  t0=$(date +%s)
  python3 -c "
import torch, gsplat
m = torch.zeros(1, 3, device='cuda'); q = torch.tensor([[1., 0, 0, 0]], device='cuda')
gsplat.rasterization(m, q, torch.ones(1, 3, device='cuda') * .1, torch.ones(1, device='cuda'), torch.ones(1, 3, device='cuda'),
    torch.eye(4, device='cuda')[None], torch.eye(3, device='cuda')[None], 8, 8)
print('gsplat ready')" 2>&1 | tail -3
  echo "gsplat build: $(( $(date +%s) - t0 )) s"
  python3 -m rasterizer.bench_gpu --repeat 20 2>&1 | tee "$OUT/bench_gpu.log"
fi
