#!/usr/bin/env bash
# The GPU check: every method's training step against its official formulation at the papers' settings (bf16
# autocast, the official batch sizes, K and class counts), and the two fused kernels, each through
# bench/harness.py (time, peak memory, dispatched aten ops), in one run of at most 8 minutes on one H100.
#
#   bash bench/gpu_check.sh OUTDIR         on a machine with a CUDA GPU; every result goes to OUTDIR
#   bash bench/gpu_check.sh --parse-only   anywhere: checks each suite's arguments as this script passes them
#
# OUTDIR gets <suite>-cuda.{jsonl,md} (the harness's rows), <suite>.log, env.txt, timings.tsv (suite, exit status,
# seconds) and summary.md (every table). A suite that fails or passes its time limit is recorded in timings.tsv
# (124: the limit) and the next one runs; its rows so far are the JSON lines in its log.
# Needs $PYTHON (default: python) with torch (CUDA) and triton, and CLIP's BPE file: $TINYPROMPT_BPE, else
# ../shared/vocab/ beside the repository.
#
# Where a suite's full settings would not fit the budget (the suites' defaults are the full runs):
#   coop     RN50 only (the CoOp paper's backbone; ViT-B/16 doubles the time), 100 and 1000 classes, 3 timed steps
#   ship     2 timed steps per batch size instead of 3
#   kernels  --quick: 2 shapes per kernel and no memory runs, instead of 18 + 6 shapes
#   compile  the inductor test of tests/test_compile.py only (the aot_eager ones run on CPU in the unit suite)
# Each suite has a time limit (seconds, below; estimates, as no GPU has run this yet): they add up to 8 minutes.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python}
PARSE_ONLY=
if [[ ${1:-} == --parse-only ]]; then
    PARSE_ONLY=1
    OUT=$(mktemp -d)
elif [[ $# -eq 1 ]]; then
    OUT=$1
    mkdir -p "$OUT"
else
    echo "usage: bash bench/gpu_check.sh OUTDIR  |  bash bench/gpu_check.sh --parse-only" >&2
    exit 2
fi

export TINYPROMPT_BPE=${TINYPROMPT_BPE:-$REPO/../shared/vocab/bpe_simple_vocab_16e6.txt.gz}
export TINYPROMPT_OFFLINE=1  # nothing is downloaded: a missing file fails at once
if [[ ! -f $TINYPROMPT_BPE ]]; then
    echo "CLIP's BPE file is not at $TINYPROMPT_BPE: set TINYPROMPT_BPE to bpe_simple_vocab_16e6.txt.gz" >&2
    exit 2
fi
if [[ -z $PARSE_ONLY ]] && ! "$PYTHON" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    echo "no CUDA device visible to torch: run this on a GPU machine (or pass --parse-only)" >&2
    exit 2
fi

# suite  seconds  arguments of `python -m bench` (each run also gets --out OUTDIR)
run_suite() {
    local name=$1 limit=$2
    shift 2
    if [[ -n $PARSE_ONLY ]]; then
        "$PYTHON" -c 'import sys; from bench.__main__ import parse; parse(sys.argv[1:])' "$@" --out "$OUT" \
            && echo "parses: python -m bench $*" || echo "DOES NOT PARSE: python -m bench $*"
        return
    fi
    local start=$SECONDS
    echo "== $name (limit ${limit} s): python -m bench $*"
    timeout --kill-after=10 "$limit" "$PYTHON" -m bench "$@" --out "$OUT" >"$OUT/$name.log" 2>&1
    local status=$?
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" | tee -a "$OUT/timings.tsv"
}

if [[ -z $PARSE_ONLY ]]; then
    printf 'suite\tstatus\tseconds\n' >"$OUT/timings.tsv"
    { nvidia-smi; "$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'triton', triton.__version__, torch.cuda.get_device_name())"; } >"$OUT/env.txt" 2>&1
fi

# POMP: 32 images x 4 views, K 1000 of N 10,450, ViT-B/16 text tower; the library default ("auto": one pass on
# CUDA) and the CPU default's chunks of 256, beside the official formulation
run_suite pomp 90 pomp --device cuda --text-chunk auto 256 --reps 3
# CoOp: batch 32, n_ctx 16; the official formulation at 1000 classes holds ~20 GB of bf16 activations
run_suite coop 130 coop --device cuda --backbones RN50 --classes 100,1000 --official-max-classes 1000 --reps 3
# TaI-DPT: batch 512 captions, C = 80, RN50 text tower
run_suite taidpt 45 taidpt --device cuda --reps 3
# SHIP: the generator and the fine-tune steps at batch 8 and 64 (the epoch from the fit), ViT-B/16
run_suite ship 75 ship --device cuda --reps 2
# ILM-VP: the CLIP variant's step (ViT-B/32, batch 32); its greedy mapping is CPU work, benchmarked on CPU
run_suite ilmvp 30 ilmvp --device cuda
# the fused losses (sampled softmax, ranking) against eager, torch.compile and their reference twins
run_suite kernels 70 kernels --device cuda --quick --reps 5

if [[ -n $PARSE_ONLY ]]; then
    rm -r "$OUT"
    exit 0
fi
start=$SECONDS
echo "== compile (limit 40 s): pytest tests/test_compile.py -k inductor"
timeout --kill-after=10 40 "$PYTHON" -m pytest -q tests/test_compile.py -k inductor >"$OUT/compile.log" 2>&1
printf '%s\t%s\t%s\n' compile $? "$((SECONDS - start))" | tee -a "$OUT/timings.tsv"

{
    echo "# GPU check ($(date -I))"
    echo
    echo '```'
    cat "$OUT/timings.tsv"
    echo '```'
    for table in "$OUT"/*-cuda.md; do
        [[ -f $table ]] && { echo; cat "$table"; }
    done
} >"$OUT/summary.md"
echo "wrote $OUT/summary.md"
