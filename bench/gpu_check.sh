#!/usr/bin/env bash
# One prepared check of DynaLay on a CUDA GPU (under 8 minutes on one GPU), printing one summary
# of every ratio at the end. Run from the repository root with the project installed:
#
#     bash bench/gpu_check.sh            # PYTHON=.venv/bin/python by default
#
# 1. tests with DYNALAY_TEST_DEVICE=cuda (the device of the tests that take one, conftest's
#    test_device: the host-sync counts of tests/dynalay_env/test_host_syncs.py), with the
#    loop-operator and env tests on that machine's install; TESTS="tests" runs the whole suite
#    (its other tests run on the CPU by design; about 3-5 minutes on 2 CPU cores);
# 2. bench/env_throughput.py: the native vector env against the bare model at N = 256 and 4096;
# 3. bench/adaptive_inference.py: the deployable classifier against loop-all on the GPU;
# 4. bench/train_step.py: a DynaLay training step against a plain one, at 16/32/64 and 64/128/256;
# 5. a short run_rl.py training run (pre-training, one round of PPO and supervised) on cuda.
# On a machine without CUDA it says so and exits 2 before running anything.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/gpu_check}
TESTS=${TESTS:-tests/dynalay_env/test_host_syncs.py tests/main_model/test_loop_operators.py tests/dynalay_env/test_env.py}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch ($("$PYTHON" -c 'import torch; print(torch.__version__)')):" \
        "run this on a machine with an NVIDIA GPU (nothing was run)." >&2
    exit 2
fi
mkdir -p "$OUT"
"$PYTHON" -c "import torch; print('gpu_check on', torch.cuda.get_device_name(0), 'torch', torch.__version__)" \
    | tee "$OUT/summary.txt"
failed=0

step() {  # step NAME LOG COMMAND...: run, keep the log, note a failure, never stop the check
    local name=$1 log=$2
    shift 2
    local started=$SECONDS
    if "$@" > "$OUT/$log" 2>&1; then
        echo "[ok]     $name ($((SECONDS - started)) s)" | tee -a "$OUT/summary.txt"
    else
        echo "[FAILED] $name ($((SECONDS - started)) s): see $OUT/$log" | tee -a "$OUT/summary.txt"
        tail -20 "$OUT/$log"
        failed=1
    fi
}

# shellcheck disable=SC2086  # TESTS is a list of paths
step "tests on cuda" tests.log env DYNALAY_TEST_DEVICE=cuda timeout 180 "$PYTHON" -m pytest -q $TESTS
step "env throughput" env_throughput.log timeout 150 "$PYTHON" bench/env_throughput.py \
    --device cuda --num-envs 256 4096 --quick
step "adaptive inference" adaptive_inference.log timeout 90 "$PYTHON" bench/adaptive_inference.py \
    --device cuda --batch-sizes 64 256 4096 --seconds 2
step "train step" train_step.log timeout 120 "$PYTHON" bench/train_step.py --device cuda \
    --operators conv3x3 conv1x1 --backwards ift jfb --repeats 5
step "run_rl.py on cuda" run_rl.log timeout 120 "$PYTHON" run_rl.py --algo ppo \
    --env DynaLay-FashionMNIST-v0 --device cuda --widths 16 32 64 --strides 2 2 2 \
    --pretrain-epochs 1 --train-size 4000 --rounds 1 --total-timesteps 2048 \
    --logdir "$OUT/run"

echo "--- ratios" | tee -a "$OUT/summary.txt"
grep -h "ratio" "$OUT"/env_throughput.log "$OUT"/adaptive_inference.log "$OUT"/train_step.log \
    2>/dev/null | tee -a "$OUT/summary.txt"
exit $failed
