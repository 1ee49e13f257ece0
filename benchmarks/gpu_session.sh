#!/usr/bin/env bash
# The GPU checks of the Triton engine, in steps that each fit one 10-minute call on a lent GPU
# machine (an H100 or H200 with python3, torch and triton installed, no network).
#
#   bash benchmarks/fetch_gpu_wheels.sh          # here, once: open_clip + Inf-CL wheels into .devwheels/
#   bash benchmarks/gpu_session.sh tests         # on the GPU: compiled correctness tests   (~3 min)
#   bash benchmarks/gpu_session.sh tiles         # tile / dC-mode sweep at 2N=65536, D=256  (~5 min)
#   bash benchmarks/gpu_session.sh bench         # the table, trimmed to fit        (~10 min)
#   bash benchmarks/gpu_session.sh all           # the three in a row (a machine without the 10-minute limit)
#
# With the device tool: carry [".devwheels"], command `OUT=$OUT bash benchmarks/gpu_session.sh tests`.
# Results go to $OUT (default benchmarks/results/gpu): env.txt, pytest logs, triton*.json/md.
set -uo pipefail

step=${1:-all}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1  # the engine passes it per launch; comparison libraries do not
unset TRITON_INTERPRET

if compgen -G ".devwheels/*.whl" >/dev/null; then
    python3 -m pip install --no-index --no-deps --quiet .devwheels/*.whl || echo "wheel install failed" >&2
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
    git rev-parse HEAD 2>/dev/null || echo "commit: see the session's checkout"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

run_tests() {
    # -o addopts= drops the pytester/strict options that need the package installed; warnings stay errors
    timeout 540 python3 -m pytest -q -o addopts="" -W error -p no:cacheprovider \
        tests/test_engine_triton_gpu.py 2>&1 | tee "$OUT/pytest_gpu.log" | tail -25
}

run_tiles() {
    timeout 540 python3 benchmarks/bench_triton.py --losses clip nt_xent --sizes 65536 --dims 256 \
        --dtypes bf16 --methods contrastive-triton --repeats 5 --out "$OUT/tiles" \
        --tiles default columns=atomic backward_warps=4 block_dv=256 block_dv=256,columns=atomic \
        block_dv=64 num_warps=8 block_m=128,block_n=64,num_warps=8 block_m=128,block_n=128,num_warps=8 \
        num_stages=3 2>&1 | tail -40
}

run_bench() {
    # the grid, trimmed to one call: D=256 bf16 up to 4M; the rest at the sizes that answer the goals
    timeout 280 python3 benchmarks/bench_triton.py --losses clip --sizes 8192 32768 65536 262144 1048576 4194304 \
        --dims 256 --dtypes bf16 --repeats 3 --warmup 1 --max-seconds 20 --out "$OUT/clip_bf16" 2>&1 | tail -30
    timeout 150 python3 benchmarks/bench_triton.py --losses clip --sizes 8192 65536 262144 --dims 128 768 \
        --dtypes bf16 fp32 --repeats 3 --warmup 1 --max-seconds 10 --out "$OUT/clip_dims" 2>&1 | tail -30
    timeout 120 python3 benchmarks/bench_triton.py --losses nt_xent supcon --sizes 65536 --dims 256 \
        --dtypes bf16 --repeats 5 --out "$OUT/supcon" 2>&1 | tail -10
}

case "$step" in
    tests) run_tests ;;
    tiles) run_tiles ;;
    bench) run_bench ;;
    all) run_tests; run_tiles; run_bench ;;
    *) echo "usage: $0 [tests|tiles|bench|all]" >&2; exit 2 ;;
esac
