#!/usr/bin/env bash
# One prepared GPU session (an NVIDIA H200), weights randomly initialised at the published shapes:
# timings and memory only, never edit quality. Usage on the GPU machine:
#   bash benchmarks/h200_session.sh            (writes under $OUT, default ./h200-out)
# Needs, carried from a machine with network: .whl/ (jsonschema and its deps for the results schema)
# and .devcarry/ (SmolLM2's tokenizer files, and benchmarks/synthetic_edits.py's 100 edits).
# Time limits per phase add up to under ten minutes; each phase is cut by `timeout`, so a slow phase
# never costs the later ones their turn. Set SKIP_SCALE=0 to add benchmarks/scale.py.
set -u
OUT=${OUT:-h200-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

edit() {  # edit METHOD TIMEOUT EVAL: the CLI end to end on a random LLaMA-3-8B-shaped model, 100 edits
  local start; start=$(date +%s)
  timeout "$2" python3 -m crispedit_lite edit --model random:llama3-8b-shape \
    --tokenizer .devcarry/tokenizer --data .devcarry/synthetic_edits_100.json --n-edits 100 \
    --dataset-name synthetic-100 --method "$1" --preset paper --n-capability 64 \
    --capability-source offline --device cuda --dtype bfloat16 --eval "$3" \
    --results-dir "$OUT" --cache-dir /tmp/kfac --run-id "h200-random-llama3-8b-$1" \
    --no-progress 2>&1 | grep -v -i warning | tee "$OUT/cli-$1.log"
  echo "cli $1: exit ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s" | tee -a "$OUT/phases.txt"
}

# 1. CrispEdit: K-FAC on 64 capability texts, eigendecompositions, 100 edits (25 epochs: random
#    weights never reach the early stop), teacher-forced + proxies before and after (CLI_EVAL adds WILD).
edit crispedit "${CLI_TIMEOUT:-210}" "${CLI_EVAL:-teacher_forced,proxies}"
# 2. MEMIT and AlphaEdit at the same shape: keys, target values, the layer-by-layer closed form
#    (layers 4-8, the covariance from the same K-FAC cache, AlphaEdit's null space).
edit memit "${CF_TIMEOUT:-110}" teacher_forced
edit alphaedit "${CF_TIMEOUT:-110}" teacher_forced

# 3. The CrispEdit step against the plain FT step, side by side, per projection form, at both shapes.
for shape in llama3-8b-shape qwen2.5-1.5b-shape; do
  timeout "${STEP_TIMEOUT:-75}" python3 benchmarks/step_ratio.py --model "random:$shape" \
    --tokenizer .devcarry/tokenizer --device cuda --dtype bfloat16 --batch 32 --repeats 3 \
    --out "$OUT/step-ratio-$shape.json" 2>&1 | grep -v -i warning | tee "$OUT/step-ratio-$shape.log"
done

# 4. Optional: the scale benchmark (K-FAC throughput, eigh, projection variants, step time, schedule);
#    benchmarks/scale.py runs its sections from the benchmarks/scale_*.py modules beside it.
[ "${SKIP_SCALE:-1}" = 1 ] || timeout 200 python3 benchmarks/scale.py --preset llama3-8b qwen2.5-1.5b \
  --out "$OUT/scale-h200.json" 2>&1 | tee "$OUT/scale-h200.log"
echo "session done"
