#!/usr/bin/env bash
# One call on the GPU machine: the CUDA tests, then the benchmarks, most valuable first, within one budget.
#
#   bash benchmarks/gpu.sh                                   # in the repo root, on the GPU machine
#   GPU_SH_DEVICE=cpu GPU_SH_QUICK=1 GPU_SH_CAP_SCALE=4 GPU_SH_BUDGET=3000 PYTHON=/work/venv/bin/python \
#     bash benchmarks/gpu.sh                                 # dry run of every step on a CPU, small sizes
#
# Steps: (a) pytest tests/test_cuda.py, (b) bench_cka.py W1+W2, (c) bench_snn_step.py (float32),
# (d) bench_train.py --cifar-sized (the data share and the ResNet-20 SNN T=4 epoch), (e) bench_data.py,
# (f) bench_snn_step.py --amp (fused + ANN only) at batch 128 and (g) at batch 256 (the trainer's batch sizes).
# Each step runs under `timeout` with min(its cap, what is left of GPU_SH_BUDGET seconds); a step that would
# get under 20 s is skipped, so the whole script ends within GPU_SH_BUDGET + ~30 s (environment report and
# wheel install). Every step's output goes to stdout and to $OUT/<step>.log; $OUT/summary.txt collects
# each step's exit code, seconds and result tables and is printed last.
# Wheels in .whl/ (spikingjelly, snntorch, loguru: the SNN-step peers) are installed into /tmp/site first;
# the run call must carry [".whl"].

set -u
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
export SNNCKA_CACHE="${SNNCKA_CACHE:-/tmp/snncka-cache}"
OUT="${OUT:-/tmp/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DEVICE="${GPU_SH_DEVICE:-cuda}"
QUICK="${GPU_SH_QUICK:-0}"
BUDGET="${GPU_SH_BUDGET:-400}"  # seconds for steps (a)-(g) together
CAP_SCALE="${GPU_SH_CAP_SCALE:-1}"  # multiplies every step's cap (dry runs on a slow CPU)
STEPS="${GPU_SH_STEPS:-a,b,c,d,e,f,g}"  # a subset for a rerun, e.g. GPU_SH_STEPS=c,d
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
START=$SECONDS
FAILED=0

log() { echo "$*" | tee -a "$SUMMARY"; }

# ---------------------------------------------------------------------------------------------- environment
# (the wheel install runs in this shell, not in a pipeline's subshell, so that PYTHONPATH keeps /tmp/site)
if compgen -G ".whl/*.whl" >/dev/null; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl > "$OUT/env.log" 2>&1
  then export PYTHONPATH="$PYTHONPATH:/tmp/site"; WHEELS="installed into /tmp/site: $(ls .whl | tr '\n' ' ')"
  else WHEELS="WHEEL INSTALL FAILED (see env.log): the SNN-step peers will be skipped"; fi
else
  WHEELS="no .whl/: spikingjelly and snntorch rows are skipped where they are not installed"
fi
{
  echo "=== gpu.sh $(date -u +%FT%TZ) on ${HOSTNAME:-?}, $(nproc) CPUs; device=$DEVICE quick=$QUICK steps=$STEPS budget=${BUDGET}s"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(git status --short 2>/dev/null | wc -l) changed files"
  echo "$WHEELS"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi
  "$PY" - <<'EOF'
import importlib, sys, time
t = time.perf_counter()
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (import {time.perf_counter() - t:.1f} s), "
      f"CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
          f"cuDNN {torch.backends.cudnn.version()}, TF32 conv {torch.backends.cudnn.allow_tf32} "
          f"matmul {torch.backends.cuda.matmul.allow_tf32}")
missing, present = [], []
for m in ["numpy", "sklearn", "click", "tqdm", "matplotlib", "pytest", "triton", "tonic", "aedat", "loguru",
          "spikingjelly", "snntorch", "cka", "torch_cka", "repsim"]:
    try:
        mod = importlib.import_module(m)
        present.append(f"{m} {getattr(mod, '__version__', '')}".strip())
    except Exception as e:  # noqa: BLE001
        missing.append(f"{m} ({type(e).__name__}: {str(e)[:80]})")
print("present:", ", ".join(present))
print("missing:", "; ".join(missing) or "none")
import snncka, snncka.analyses, snncka.cka, snncka.data, snncka.peers, snncka.record, snncka.training  # noqa: E401
print("import snncka OK:", snncka.__file__)
EOF
  echo "import snncka: rc=$?"
} 2>&1 | tee -a "$OUT/env.log"
grep -E "^(python|NVIDIA|present|missing|import snncka|installed|WHEEL|no .whl)" "$OUT/env.log" >> "$SUMMARY"

# ---------------------------------------------------------------------------------------------- steps
# step NAME CAP_SECONDS SUMMARY COMMAND...   (SUMMARY: how many last lines of the log go to the summary, or a
# regular expression that picks its lines)
step() {
  local name=$1 cap=$(($2 * CAP_SCALE)) lines=$3
  shift 3
  if [[ ",$STEPS," != *",${name%%_*},"* ]]; then return; fi
  local left=$((BUDGET - (SECONDS - START)))
  local t=$((cap < left ? cap : left))
  if ((t < 20)); then
    log "--- $name: SKIPPED (${left}s of the budget left)"
    return
  fi
  local t0=$SECONDS
  echo "=== $name (timeout ${t}s): $*" | tee "$OUT/$name.log"
  timeout -k 10 "$t" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=$?
  local what="ok"
  if ((rc == 124 || rc == 137)); then what="TIMED OUT after ${t}s"; elif ((rc != 0)); then what="FAILED"; fi
  ((rc != 0)) && FAILED=$((FAILED + 1))
  log "--- $name: rc=$rc $what, $((SECONDS - t0)) s (total $((SECONDS - START)) s)"
  if [[ $lines =~ ^[0-9]+$ ]]; then
    grep -v -E "^(DEBUG|INFO|\s*$)" "$OUT/$name.log" | tail -n "$lines" >> "$SUMMARY"
  else
    grep -E "$lines" "$OUT/$name.log" | tail -n 40 >> "$SUMMARY"
  fi
}

if [[ $QUICK == 1 ]]; then
  CKA_Q=(--quick); STEP_Q=(--rounds 1 --batch 4); TRAIN_Q=(--train-images 512 --width 0.25 --epochs 2)
  DATA_Q=(--batch 32 --repeats 2); AMP_Q=(--rounds 1 --batch 4)
else
  CKA_Q=(); STEP_Q=(--rounds 15); TRAIN_Q=(--epochs 2); DATA_Q=(--repeats 10); AMP_Q=(--rounds 15 --batch 128)
fi
TEST_ENV=()
[[ $DEVICE == cpu ]] && TEST_ENV=(env SNNCKA_TEST_DEVICE=cpu)

step a_test_cuda 150 "max \|diff\||passed|failed|FAILED|ERROR|error|s (call|setup) " \
  "${TEST_ENV[@]}" "$PY" -m pytest tests/test_cuda.py -q -s -rfEs -p no:cacheprovider --durations=8
# a rerun can narrow steps b and c (each row and variant is a fresh process: ~10 s of start-up on the GPU machine)
CKA_ROWS="${GPU_SH_CKA_ROWS:-ours,paper@256,ours@4096,ours@1024,paper@1024,floor#2,ours#2,grams}"
read -r -a CKA_EXTRA <<< "${GPU_SH_CKA_EXTRA:-}"
SNN_VARIANTS="${GPU_SH_SNN_VARIANTS:-fused,reference,spikingjelly,snntorch,ann}"
step b_bench_cka "${GPU_SH_CAP_B:-200}" 45 "$PY" benchmarks/bench_cka.py --device "$DEVICE" --workloads W1,W2 \
  --rows "$CKA_ROWS" "${CKA_EXTRA[@]}" "${CKA_Q[@]}"
step c_bench_snn_step "${GPU_SH_CAP_C:-120}" 10 "$PY" benchmarks/bench_snn_step.py --device "$DEVICE" \
  --variants "$SNN_VARIANTS" "${STEP_Q[@]}"
step d_bench_train 120 5 "$PY" benchmarks/bench_train.py --cifar-sized --device "$DEVICE" "${TRAIN_Q[@]}"
step e_bench_data 60 10 "$PY" benchmarks/bench_data.py --device "$DEVICE" --amp "${DATA_Q[@]}"
step f_bench_snn_step_amp 90 6 "$PY" benchmarks/bench_snn_step.py --device "$DEVICE" --amp --variants fused,ann \
  "${AMP_Q[@]}"
step g_bench_snn_step_amp256 90 6 "$PY" benchmarks/bench_snn_step.py --device "$DEVICE" --amp --variants fused,ann \
  "${AMP_Q[@]}" --batch 256

log "=== gpu.sh done: $FAILED step(s) failed, $((SECONDS - START)) s"
echo
echo "################################ summary ($SUMMARY)"
cat "$SUMMARY"
exit $((FAILED > 0))
