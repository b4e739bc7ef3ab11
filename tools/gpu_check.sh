#!/usr/bin/env bash
# One device call: kernel compile cost (fresh and cached), the GPU tests, gsplat 1.4.0's JIT build
# (in the background while the tests that do not import gsplat run), the tests against live gsplat
# and the GPU benchmark. Logs go to $OUT. See docs/gpu.md.
# Needs, carried: .whl/ (plyfile and gsplat 1.4.0 wheels, and any pure-Python dependency of gsplat the
# image lacks, e.g. rich) and .scenes/ (the real scenes).
# Usage: tools/gpu_check.sh [all|tests|bench]
# Nothing may import gsplat while it builds: a second importer deletes the half-built extension.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD SPLATTER_SCENES=$PWD/.scenes PYTHONUNBUFFERED=1
export MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 TORCH_EXTENSIONS_DIR=/tmp/torch_ext
stage=${1:-all}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import cupy, numba, torch; print('cupy', cupy.__version__, 'numba', numba.__version__, 'torch', torch.__version__)"

# compile cost: a fresh CuPy kernel cache, then a second process on the same cache
export CUPY_CACHE_DIR=/tmp/cupy_cache_fresh; rm -rf "$CUPY_CACHE_DIR"
python3 -m bench.gpu --compile-only 2>&1 | tee "$OUT/compile.log" || exit 1
python3 -m bench.gpu --compile-only 2>&1 | tee -a "$OUT/compile.log"

( python3 -c "
import time, torch; t0 = time.time(); import gsplat
m = torch.zeros(1, 3, device='cuda'); q = torch.tensor([[1., 0, 0, 0]], device='cuda')
gsplat.rasterization(m, q, torch.ones(1, 3, device='cuda') * .1, torch.ones(1, device='cuda'), torch.ones(1, 3, device='cuda'),
    torch.eye(4, device='cuda')[None], torch.eye(3, device='cuda')[None], 8, 8)
print(f'gsplat ready in {time.time() - t0:.0f} s')" > "$OUT/gsplat_build.log" 2>&1 ) &
build=$!
if [ "$stage" != bench ]; then
  timeout 300 python3 -m pytest -q -ra -p no:cacheprovider tests/test_gpu_backend.py tests/test_golden.py \
    tests/test_sh.py -k "not gsplat" 2>&1 | tee "$OUT/tests.log"
fi
wait $build; tail -2 "$OUT/gsplat_build.log"
if [ "$stage" != bench ]; then
  timeout 300 python3 -m pytest -q -ra -p no:cacheprovider -k "gpu or live or gsplat" tests/test_gsplat_reference.py \
    tests/test_sh.py 2>&1 | tee -a "$OUT/tests.log"
fi
if [ "$stage" != tests ]; then
  timeout 400 python3 -m bench.gpu --repeat 20 2>&1 | tee "$OUT/bench_gpu.log"
fi
