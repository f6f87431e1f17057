#!/usr/bin/env bash
# GPU check of the torch backend, on a machine with an NVIDIA GPU and PyTorch but no network access.
#
#   benchmarks/gpu_check.sh [all|tests|bench|study]      (default: all, in that order)
#
# tests: the backend tests on CUDA (MEANFIELD_TEST_DEVICE=cuda)
# bench: one CBO / hybrid / Adam iteration at the paper's MNIST size against the GPU's float32 GEMM
#        time, written to $OUT/gpu_step.{md,json}
# study: the full-size MNIST study (studies/mnist_gpu.toml: N = 1000, 10,000 epochs, one seed per
#        method) into $OUT/mnist_gpu.nc, its figures into figures/ and its summary into $OUT
#
# Environment: DATA_DIR, the MNIST test-set IDX files (default data/mnist); OUT (default results/gpu);
# WHEELS, a directory of wheels to install meanfield from without an index (see README, "GPU").
# Nothing is downloaded: with WHEELS unset, meanfield and its dependencies must be installed already.
set -euo pipefail
cd "$(dirname "$0")/.."
phase="${1:-all}"
DATA_DIR="${DATA_DIR:-data/mnist}"
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"

if [[ -n "${WHEELS:-}" ]]; then
    python -m pip install --quiet --no-index --find-links "$WHEELS" .
fi
python - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit(f"gpu_check: torch {torch.__version__} sees no CUDA device")
print(f"gpu_check: torch {torch.__version__} on {torch.cuda.get_device_name()}")
PY

if [[ "$phase" == all || "$phase" == tests ]]; then
    MEANFIELD_TEST_DEVICE=cuda python -m pytest -q -p no:cacheprovider \
        tests/test_torch_backend.py tests/test_array_api.py
fi
if [[ "$phase" == all || "$phase" == bench ]]; then
    python benchmarks/bench_gpu_step.py --device cuda --out "$OUT"
fi
if [[ "$phase" == all || "$phase" == study ]]; then
    start=$(date +%s)
    meanfield run studies/mnist_gpu.toml --data-dir "$DATA_DIR" --out "$OUT/mnist_gpu.nc" --no-progress
    echo "gpu_check: study took $(( $(date +%s) - start )) s"
    meanfield plot "$OUT/mnist_gpu.nc" --out-dir figures
    meanfield info "$OUT/mnist_gpu.nc" > "$OUT/mnist_gpu_summary.txt"
fi
