#!/usr/bin/env bash
# The GPU check, in one script (about 8 minutes on one recent GPU):
#   1. the CUDA tests (tests/test_cuda.py) and the bf16 autocast tests (tests/test_autocast.py);
#   2. benchmarks/step_time.py on CUDA against both references, and benchmarks/adamw_step.py on CUDA;
#   3. nanoGPT's shakespeare-char GPU configuration (6 layers, 6 heads, d 384, block 256, batch 64, dropout 0.2,
#      lr 1e-3 with 100 warmup steps and a cosine to 1e-4, weight decay 0.1, betas (0.9, 0.99), clip 1.0,
#      5,000 steps) trained by `minipt pretrain` with a character tokenizer: the validation loss (target <= 1.47),
#      the wall time and the peak GPU memory;
#   4. a `gpu_check` section of benchmarks/RESULTS.md with what 2. and 3. measured (2. writes its own sections).
#
# Usage: benchmarks/gpu_check.sh CORPUS.txt           (e.g. /work/shared/data/tinyshakespeare.txt)
#        benchmarks/gpu_check.sh --dry-run [CORPUS]   (every step with tiny settings on the CPU; writes
#                                                     benchmarks/gpu_check_dry_run.md, not RESULTS.md)
# Extra settings for the pretraining run go in MINIPT_GPU_FLAGS, e.g. MINIPT_GPU_FLAGS="--compile".
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi
CORPUS="${1:-}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ $DRY_RUN == 1 ]]; then
    DEVICE=cpu
    if [[ -z "$CORPUS" ]]; then  # a small corpus of our own: the dry run needs no data
        CORPUS="$WORK/corpus.txt"
        python -c "import sys; open(sys.argv[1], 'w').write('To be, or not to be, that is the question:\n' * 400)" "$CORPUS"
    fi
    BENCH_FLAGS=(--shapes nanogpt --rounds 1 --steps-per-round 1 --no-write)
    STEP_FLAGS=("${BENCH_FLAGS[@]}" --overhead-steps 0)
    RUN_FLAGS=(--n-layers 1 --n-heads 2 --d-model 32 --d-ff 128 --block-size 32 --batch-size 4 --dropout 0.2
               --steps 20 --warmup 2 --eval-every 10 --eval-batches 2 --threads 2)
    REPORT=benchmarks/gpu_check_dry_run.md
else
    DEVICE=cuda
    [[ -f "$CORPUS" ]] || { echo "gpu_check.sh: give the corpus file, e.g. /work/shared/data/tinyshakespeare.txt" >&2; exit 2; }
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "gpu_check.sh: no CUDA GPU here (use --dry-run on a CPU)" >&2; exit 2; }
    BENCH_FLAGS=(--rounds 5 --steps-per-round 10)
    STEP_FLAGS=("${BENCH_FLAGS[@]}" --overhead-steps 0 --quiet-machine yes)
    RUN_FLAGS=(--n-layers 6 --n-heads 6 --d-model 384 --d-ff 1536 --block-size 256 --batch-size 64 --dropout 0.2
               --steps 5000 --warmup 100 --eval-every 1000 --eval-batches 200)
    REPORT=benchmarks/RESULTS.md
fi
echo "gpu_check: device $DEVICE, corpus $CORPUS, report $REPORT"

echo "== 1. tests"
python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_autocast.py

echo "== 2. step time and AdamW on $DEVICE"
(cd benchmarks && python step_time.py --device "$DEVICE" "${STEP_FLAGS[@]}" | tee "$WORK/step_time.txt")
(cd benchmarks && python adamw_step.py --device "$DEVICE" "${BENCH_FLAGS[@]}" | tee "$WORK/adamw.txt")

echo "== 3. nanoGPT's shakespeare-char configuration"
# shellcheck disable=SC2086  # MINIPT_GPU_FLAGS is a list of flags
python - "$CORPUS" "$DEVICE" "$WORK/run" "$REPORT" "$DRY_RUN" "${RUN_FLAGS[@]}" ${MINIPT_GPU_FLAGS:-} <<'PYTHON'
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
import results  # noqa: E402

from minipt.cli import build_parser, pretrain_config  # noqa: E402
from minipt.jobs.pretrain import pretrain  # noqa: E402

corpus, device, run_dir, report, dry_run, *flags = sys.argv[1:]
argv = ["pretrain", "--corpus", corpus, "--tokenizer", "char", "--lr", "1e-3", "--weight-decay", "0.1",
        "--grad-clip", "1.0", "--device", device, "--out", run_dir, *flags]
config, out = pretrain_config(build_parser().parse_args(argv))
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
result = pretrain(config, Path(out), progress=False)
wall = time.perf_counter() - start
val_loss = result.last_evaluation["val_loss"]
peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else "n/a (CPU)"
met = "met" if val_loss <= 1.47 else "MISSED"
gpu = torch.cuda.get_device_name() if device == "cuda" else "none (dry run on the CPU)"
print(f"val loss {val_loss:.4f} (target <= 1.47: {met}), wall {wall:.0f} s, peak GPU memory {peak}")

section = "\n".join([
    f"## GPU check (benchmarks/gpu_check.sh{' --dry-run' if dry_run == '1' else ''})",
    "",
    f"{results.machine_line()} GPU: {gpu}.",
    "",
    f"nanoGPT's shakespeare-char configuration by `minipt pretrain` ({' '.join(argv[1:])}): the steps run "
    "with the fast path and bf16 autocast on CUDA. The step time and AdamW tables are the `step_time_cuda` and "
    "`adamw_cuda` sections.",
    "",
    "| steps | validation loss | target | wall time | peak GPU memory |",
    "|---:|---:|---:|---:|---:|",
    f"| {config.steps} | {val_loss:.4f} | <= 1.47 ({met}) | {wall:.0f} s | {peak} |",
])
if dry_run == "1":
    results.RESULTS = Path(report)
    Path(report).unlink(missing_ok=True)
results.write_section("gpu_check", section)
print(section)
PYTHON
echo "gpu_check: done, see $REPORT"
