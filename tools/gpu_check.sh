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

# gsplat's CUDA extension: a copy built by an earlier call (.whl/gsplat_cuda.so.xz, saved from its $OUT),
# loaded as gsplat.csrc in about a second, or else built now (~170 s) and saved to $OUT/gsplat_cuda.so.xz
# for the next call. A copy this machine's torch cannot load raises ImportError and gsplat builds anew.
if [ -f .whl/gsplat_cuda.so.xz ] && [ -d /tmp/site/gsplat ]; then
  xz -dc .whl/gsplat_cuda.so.xz > /tmp/site/gsplat/gsplat_cuda.so
  cat > /tmp/site/gsplat/csrc.py <<'PY'
import importlib.machinery, importlib.util, os
import torch  # noqa: F401  (the extension needs torch's libraries loaded first)
_path = os.path.join(os.path.dirname(__file__), "gsplat_cuda.so")
try:
    _loader = importlib.machinery.ExtensionFileLoader("gsplat_cuda", _path)
    _module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("gsplat_cuda", _path,
                                                                                      loader=_loader))
    _loader.exec_module(_module)
except Exception as e:
    raise ImportError(f"prebuilt gsplat_cuda.so unusable: {e}") from e
globals().update({k: getattr(_module, k) for k in dir(_module) if not k.startswith("__")})
PY
fi
( python3 -c "
import time, torch; t0 = time.time(); import gsplat
m = torch.zeros(1, 3, device='cuda'); q = torch.tensor([[1., 0, 0, 0]], device='cuda')
gsplat.rasterization(m, q, torch.ones(1, 3, device='cuda') * .1, torch.ones(1, device='cuda'), torch.ones(1, 3, device='cuda'),
    torch.eye(4, device='cuda')[None], torch.eye(3, device='cuda')[None], 8, 8)
print(f'gsplat ready in {time.time() - t0:.0f} s')" > "$OUT/gsplat_build.log" 2>&1
  so=$(ls "$TORCH_EXTENSIONS_DIR"/gsplat_cuda/gsplat_cuda.so 2>/dev/null) && xz -T8 -3 -c "$so" > "$OUT/gsplat_cuda.so.xz"
) &
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
