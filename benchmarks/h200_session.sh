#!/usr/bin/env bash
# One prepared GPU session (an NVIDIA H200), weights randomly initialised at the published shapes:
# timings and memory only, never edit quality. Usage on the GPU machine:
#   bash benchmarks/h200_session.sh            (writes under $OUT, default ./h200-out)
#   bash benchmarks/h200_session.sh --dry-run  (every phase on a CPU at a tiny shape, to check the script)
# Needs, carried from a machine with network: .whl/ (jsonschema and its deps for the results schema)
# and .devcarry/ (SmolLM2's tokenizer files, and benchmarks/synthetic_edits.py's 100 edits). The dry
# run needs neither: it builds a word-level tokenizer and its edits under $OUT.
# Each phase is cut by `timeout`, so a slow phase never costs the later ones their turn, and no phase
# starts past SESSION_LIMIT seconds (default 560, so the whole script fits one 600-second device
# command; at most about 700 for twelve minutes of device time): a phase gets at most the time left.
# The phases run in order of need: CrispEdit, MEMIT-Chunked, MEND, the long horizon, then MEMIT,
# AlphaEdit and the step ratios, which have committed H200 results already. Set SKIP_SCALE=0 to add benchmarks/scale.py.
set -u
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; elif [ -n "${1:-}" ]; then
  echo "usage: bash benchmarks/h200_session.sh [--dry-run]" >&2; exit 2
fi
OUT=${OUT:-h200-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY=${PYTHON:-python3}
SESSION_START=$(date +%s)
SESSION_LIMIT=${SESSION_LIMIT:-560}
FAILED="" SKIPPED=""
: > "$OUT/phases.txt"

if [ "$DRY" = 1 ]; then
  # tiny-llama (hidden 32, 4 layers, vocabulary 512) on the CPU in fp32, with a word-level tokenizer
  SHAPE=tiny-llama DEVICE=cpu DTYPE=float32 TOK=$OUT/tokenizer DATA=$OUT/synthetic_edits.json N_EDITS=8
  SMALL=(--layers 1,2 --capability-max-length 32 --n-capability 8) EPOCHS=(--epochs 2) CHUNK=4
  LH=(--chunks 3 --chunk-size 4 --n-capability 8 --capability-max-length 32 --epochs 2 --layers 1,2)
  STEP_SHAPES=(tiny-llama) STEP=(--batch 4 --repeats 1 --n-capability 8 --layers 1,2) KFAC=/tmp/kfac-dry
  "$PY" benchmarks/synthetic_edits.py 12 > "$DATA"
  "$PY" - "$DATA" "$TOK" <<'PYEOF'
import json, re, sys
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
edits = json.load(open(sys.argv[1]))
words = sorted({w for e in edits for v in e.values() if isinstance(v, str) for w in re.findall(r"\w+|[^\w\s]", v)})
vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *words][:512])}
tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
tk.pre_tokenizer = pre_tokenizers.Whitespace()
PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>",
                        bos_token="<s>").save_pretrained(sys.argv[2])
print(f"dry run: tokenizer of {len(vocab)} words in {sys.argv[2]}")
PYEOF
else
  SHAPE=llama3-8b-shape DEVICE=cuda DTYPE=bfloat16 TOK=.devcarry/tokenizer N_EDITS=100
  DATA=.devcarry/synthetic_edits_100.json
  SMALL=(--n-capability 64) EPOCHS=() CHUNK=32
  LH=(--chunks 3 --chunk-size 20 --n-capability 30)
  STEP_SHAPES=(llama3-8b-shape qwen2.5-1.5b-shape) STEP=(--batch 32 --repeats 3) KFAC=/tmp/kfac
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=$PYTHONPATH:/tmp/site
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$OUT/gpu.txt"

phase() {  # phase NAME TIMEOUT CMD...: run CMD under min(TIMEOUT, time left), log its status and time
  local name=$1 limit=$2 start left; shift 2
  start=$(date +%s); left=$(( SESSION_LIMIT - (start - SESSION_START) ))
  if [ "$left" -lt 20 ]; then
    echo "phase $name: skipped (${left} s left of SESSION_LIMIT=${SESSION_LIMIT})" | tee -a "$OUT/phases.txt"
    SKIPPED="$SKIPPED $name"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" 2>&1 | grep -v -i warning | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || FAILED="$FAILED $name"
  echo "phase $name: exit $rc, $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$OUT/phases.txt"
}

# the editors this checkout registers (MEND may not be among them)
EDITORS=" $("$PY" -c "from crispedit_lite.editing.registry import editor_names; print(' '.join(editor_names()))") "

edit() {  # edit METHOD TIMEOUT EVAL [FLAGS...]: the CLI end to end on a random model at $SHAPE
  local method=$1 limit=$2 evals=$3 capability=(--capability-source offline); shift 3
  [[ "$method" == mend* ]] && capability=()  # MEND reads no capability text
  phase "cli-$method" "$limit" "$PY" -m crispedit_lite edit --model "random:$SHAPE" --tokenizer "$TOK" \
    --data "$DATA" --n-edits "$N_EDITS" --dataset-name "synthetic-$N_EDITS" --method "$method" \
    --preset paper "${capability[@]}" --device "$DEVICE" --dtype "$DTYPE" --eval "$evals" \
    --results-dir "$OUT" --cache-dir "$KFAC" --run-id "h200-random-$SHAPE-$method" --no-progress \
    "$@"
}

# 1. CrispEdit: K-FAC on 64 capability texts, eigendecompositions, 100 edits (25 epochs: random
#    weights never reach the early stop), teacher-forced + proxies before and after (CLI_EVAL adds WILD).
edit crispedit "${CLI_TIMEOUT:-180}" "${CLI_EVAL:-teacher_forced,proxies}" "${SMALL[@]}" "${EPOCHS[@]}"
# 2. MEMIT-Chunked (Table 1's MEMIT cells): the batch in chunks of 32 edits, one closed form per chunk.
edit memit_chunked "${CF_TIMEOUT:-70}" teacher_forced "${SMALL[@]}" --chunk-size "$CHUNK"
# 3. MEND, where this checkout registers it (otherwise one line says why not): no trained editor network
#    exists for a random model, so an untrained one of the paper's architecture is built for $SHAPE
#    (benchmarks/mend_random_editor.py); its edits mean nothing, its time and memory are MEND's.
#    MEND reads no capability text and edits its preset's layers, so it takes none of SMALL's flags.
MEND_NET=${TMPDIR:-/tmp}/mend-random-$SHAPE.safetensors  # about 1.1 GB at LLaMA-3-8B shape: not under $OUT
if [[ "$EDITORS" == *" mend "* ]]; then
  phase mend-network "${MEND_NET_TIMEOUT:-60}" "$PY" benchmarks/mend_random_editor.py "random:$SHAPE" "$MEND_NET"
fi
for method in mend mend_seq; do
  if [[ "$EDITORS" == *" $method "* ]]; then
    edit "$method" "${MEND_TIMEOUT:-60}" teacher_forced --set "mend_editor=$MEND_NET"
  else echo "phase cli-$method: skipped (no editor '$method' in crispedit_lite.editing.registry)" \
    | tee -a "$OUT/phases.txt"; fi
done

# 4. Long horizon: three chunks of CrispEdit-Seq through edit(..., carry=), the state carried between
#    calls as benchmarks/long_horizon.py streams it; per-chunk time, peak memory, size of the carry.
phase long-horizon "${LH_TIMEOUT:-100}" "$PY" benchmarks/long_horizon_smoke.py --model "random:$SHAPE" \
  --tokenizer "$TOK" --data "$DATA" --device "$DEVICE" --dtype "$DTYPE" "${LH[@]}" \
  --out "$OUT/long-horizon-smoke.json"

# 5. MEMIT and AlphaEdit at the same shape: keys, target values, the layer-by-layer closed form
#    (the covariance from the same K-FAC cache, AlphaEdit's null space).
edit memit "${CF_TIMEOUT:-70}" teacher_forced "${SMALL[@]}"
edit alphaedit "${CF_TIMEOUT:-70}" teacher_forced "${SMALL[@]}"
# 6. The CrispEdit step against the plain FT step, side by side, per projection form, at both shapes.
for shape in "${STEP_SHAPES[@]}"; do
  phase "step-ratio-$shape" "${STEP_TIMEOUT:-40}" "$PY" benchmarks/step_ratio.py --model "random:$shape" \
    --tokenizer "$TOK" --device "$DEVICE" --dtype "$DTYPE" "${STEP[@]}" --out "$OUT/step-ratio-$shape.json"
done

# 7. Optional: the scale benchmark (K-FAC throughput, eigh, projection variants, step time, schedule);
#    benchmarks/scale.py runs its sections from the benchmarks/scale_*.py modules beside it.
if [ "$DRY" = 0 ] && [ "${SKIP_SCALE:-1}" != 1 ]; then
  phase scale 200 "$PY" benchmarks/scale.py --preset llama3-8b qwen2.5-1.5b --out "$OUT/scale-h200.json"
fi
echo "session done in $(( $(date +%s) - SESSION_START )) s; failed phases:${FAILED:- none}; skipped for time:${SKIPPED:- none}" \
  | tee -a "$OUT/phases.txt"
[ -z "$FAILED" ]
