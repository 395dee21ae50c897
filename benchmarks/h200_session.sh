#!/usr/bin/env bash
# The one device session of this project's GPU checks (run by the lead through the device tool on an
# NVIDIA H200, weights randomly initialised: timings and memory only). Usage on the device machine:
#   bash benchmarks/h200_session.sh            (writes under $OUT, default ./h200-out)
# Needs, carried from a machine with network: .whl/ (jsonschema and its deps for the results schema)
# and .devcarry/ (SmolLM2's tokenizer files, and benchmarks/synthetic_edits.py's 100 edits).
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

# 1. issue 4: the CLI, end to end, on a random LLaMA-3-8B-shaped model: K-FAC, eigh, 100 edits,
#    25 epochs (random weights never reach the early stop), WILD + teacher-forced + proxies before/after.
#    Set CLI_EVAL=teacher_forced,proxies to skip WILD's greedy generation if the device time is short.
timeout "${CLI_TIMEOUT:-420}" python3 -m crispedit_lite edit --model random:llama3-8b-shape \
  --tokenizer .devcarry/tokenizer --data .devcarry/synthetic_edits_100.json --n-edits 100 \
  --dataset-name synthetic-100 --method crispedit --preset paper --n-capability 64 \
  --capability-source offline --device cuda --dtype bfloat16 --eval "${CLI_EVAL:-wild,teacher_forced,proxies}" \
  --results-dir "$OUT" --cache-dir /tmp/kfac --run-id h200-random-llama3-8b-crispedit \
  --no-progress 2>&1 | grep -v -i warning | tee "$OUT/cli-crispedit.log"

# 2. issue 5: the scale benchmark (K-FAC throughput, eigh, projection variants, step time, schedule).
[ "${SKIP_SCALE:-0}" = 1 ] || timeout 320 python3 benchmarks/scale.py --preset llama3-8b qwen2.5-1.5b --out "$OUT/scale-h200.json" \
  2>&1 | tee "$OUT/scale-h200.log"
echo "session done"
