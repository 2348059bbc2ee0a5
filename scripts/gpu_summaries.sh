#!/usr/bin/env bash
# Summaries on the H200 (issue #22, the GPU row): Qwen2.5-Coder-1.5B served by `assistant serve-llm`
# writes each summary from the selected facts (map step per document, sent concurrently, batched by the
# server); every sentence is verified against its page; key-point coverage, words, verified share and
# seconds per task are scored by `assistant eval-summaries` on both task sets.
#
#   bash scripts/gpu_summaries.sh BUNDLE WORK OUT
#
# Uses what scripts/gpu_answers_pipeline.sh stages `setup convert ingest` (and `adapter`, optional) left:
#   WORK/site           unpacked wheels (on PYTHONPATH)
#   WORK/qwen15         Qwen2.5-Coder-1.5B as a Hugging Face folder   (QWEN=... overrides)
#   WORK/hb             the handbook index (ASSISTANT_DATA_DIR)        (DATA=... overrides)
#   WORK/qrun/adapter   our LoRA adapter, if trained                  (ADAPTER=... overrides; none = skip)
#   BUNDLE/minilm       the embedding model                           (EMBED=... overrides)
# OUT receives, per configuration C in extractive, qwen-base, qwen-adapter and per task set S in dev, extra:
#   OUT/C-S/summary_report.md + summary_results.jsonl (each summary's text, missed points, seconds),
#   OUT/C-timing/ (the 30-page "cloud" scope: 1 warm-up + 5 timed runs, median and min–max),
#   OUT/server.log, OUT/summary.md (every table in one file).
# Expected on one H200: ~1 min server start, ~1 min extractive, ~2–3 min per Qwen configuration.
# SETS="dev" runs the dev set only; ADAPTER=none skips the adapter configuration; TIMING=0 the timed runs.
# Without fastapi/uvicorn on the host (or with MODE=inprocess) the model runs inside eval-summaries,
# one document at a time (coverage is the same; seconds are not the served ones).
# CPU smoke test (tiny model, no GPU; TIMING=0 skips the timed runs):
#   QWEN=<SmolLM2 HF folder> DEVICE=cpu OMP_NUM_THREADS=1 ASSISTANT_SUMMARIES__MAX_WORDS=60 TIMING=0 \
#   TASKS_EXTRA="--task expenses" bash scripts/gpu_summaries.sh BUNDLE WORK OUT
set -euo pipefail
BUNDLE=$(realpath "$1"); WORK=$(realpath -m "$2"); OUT=$(realpath -m "$3")
REPO=$(cd "$(dirname "$0")/.." && pwd)
QWEN=${QWEN:-$WORK/qwen15}; DATA=${DATA:-$WORK/hb}; EMBED=${EMBED:-$BUNDLE/minilm}
ADAPTER=${ADAPTER:-$WORK/qrun/adapter}; PORT=${PORT:-8765}; DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$WORK/site:$REPO" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export ASSISTANT_MODEL_CACHE_DIR="$WORK/cache" ASSISTANT_DATA_DIR="$DATA"
[ -d "$EMBED" ] && export ASSISTANT_EMBEDDING__MODEL="$EMBED"
cd "$REPO"
say() { echo "== $* ($(date -u +%T))" | tee -a "$OUT/progress.log"; }

adapter_args=(); with_adapter=0
if [ "$ADAPTER" != none ] && [ -e "$ADAPTER/adapter_config.json" ]; then adapter_args=(--adapter "summ=$ADAPTER"); with_adapter=1; fi
MODE=${MODE:-server}  # MODE=inprocess: no server, the model loads inside each eval-summaries process
if [ $MODE = server ] && ! $PY -c "import fastapi, uvicorn" 2>/dev/null; then
  MODE=inprocess  # serve-llm needs fastapi + uvicorn: without them the model runs inside eval-summaries (one document at a time: slower)
  say "fastapi/uvicorn not importable: the model runs in-process, documents written one at a time (add their wheels to BUNDLE/whl for the server)"
fi
URL="http://127.0.0.1:$PORT/v1"
BASE_ID=""
if [ $MODE = server ]; then
  say "serve-llm: base $QWEN, adapter ${adapter_args[*]:-none}, device $DEVICE, port $PORT"
  ASSISTANT_LLM__DEVICE=$DEVICE $PY -m assistant serve-llm --base "$QWEN" "${adapter_args[@]}" --port "$PORT" \
    --context-tokens 8192 --max-batch 64 > "$OUT/server.log" 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 1 300); do
    if ! kill -0 $SERVER 2>/dev/null; then echo "serve-llm exited:"; tail -30 "$OUT/server.log"; exit 1; fi
    BASE_ID=$($PY - "$URL" <<'EOF2' 2>/dev/null || true
import json, sys, urllib.request
ids = [m["id"] for m in json.load(urllib.request.urlopen(sys.argv[1] + "/models", timeout=2))["data"]]
print([i for i in ids if i != "summ"][0])
EOF2
)
    [ -n "$BASE_ID" ] && break; sleep 2
  done
  [ -n "$BASE_ID" ] || { echo "serve-llm did not come up in 600 s"; tail -30 "$OUT/server.log"; exit 1; }
  say "server up: base id $BASE_ID"
fi

# eval CONFIG SET FILE [extra args]: one eval-summaries run, its table appended to summary.md
run() {
  local name=$1 file=$2; shift 2
  say "$name"
  $PY -m assistant eval-summaries "$file" --out "$OUT/$name" "$@" ${TASKS_EXTRA:-} 2>&1 | tee "$OUT/$name.log" | grep -E "covered|^\|" || true
  { echo "## $name"; echo; cat "$OUT/$name/summary_report.md"; echo; } >> "$OUT/summary.md"
}
remote() {  # the environment of a model-written run (summ = the adapter, or none): our client pointed at the server
  local adapter=$1
  if [ $MODE = server ]; then
    echo ASSISTANT_LLM__ENDPOINT=$URL ASSISTANT_LLM__MODEL=$BASE_ID ASSISTANT_LLM__ADAPTER=$adapter \
      ASSISTANT_LLM__CONTEXT_TOKENS=8192 ASSISTANT_LLM__TIMEOUT_S=300 ASSISTANT_SUMMARIES__WRITE_WITH_MODEL=always
  else
    [ "$adapter" = summ ] && adapter=$ADAPTER
    echo ASSISTANT_LLM__MODEL=$QWEN ASSISTANT_LLM__ADAPTER=$adapter ASSISTANT_LLM__DEVICE=$DEVICE \
      ASSISTANT_LLM__CONTEXT_TOKENS=8192 ASSISTANT_SUMMARIES__WRITE_WITH_MODEL=always
  fi
}
: > "$OUT/summary.md"
for set in ${SETS:-dev extra}; do
  f=tests/data/summary_tasks.jsonl; [ $set = extra ] && f=tests/data/summary_tasks_extra.jsonl
  ASSISTANT_LLM__MODEL=none run "extractive-$set" "$f"
  (export $(remote none); run "qwen-base-$set" "$f" --llm)
  if [ $with_adapter = 1 ]; then (export $(remote summ); run "qwen-adapter-$set" "$f" --llm); fi
done
if [ "${TIMING:-1}" = 1 ]; then
say "timing: the 30-page scope, 1 warm-up + 5 runs"
ASSISTANT_LLM__MODEL=none run extractive-timing tests/data/summary_tasks.jsonl --task cloud --repeat 5
(export $(remote none); run qwen-base-timing tests/data/summary_tasks.jsonl --task cloud --repeat 5 --llm)
if [ $with_adapter = 1 ]; then (export $(remote summ); run qwen-adapter-timing tests/data/summary_tasks.jsonl --task cloud --repeat 5 --llm); fi
fi
say "done: $OUT/summary.md"
cat "$OUT/summary.md"
