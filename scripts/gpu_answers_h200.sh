#!/usr/bin/env bash
# Issue #16 on one H200, in ONE command: Qwen2.5-Coder-1.5B + our own LoRA adapter, served and scored.
#
#   bash scripts/gpu_answers_h200.sh BUNDLE WORK OUT
#
# BUNDLE (what the GPU host cannot download; read only):
#   qwen15.gguf      the Q4_K_M GGUF assembled (sha256-checked) by `assistant models pull qwen2.5-coder-1.5b`
#                    (or qwen15/ already converted: a Hugging Face folder with config.json)
#   questions.jsonl  scripts/gen_questions.py output on the TRAINING half (/work/data/gpu_out/questions.jsonl)
#   handbook/        the corpus root (handbook/content/...)
#   minilm/          all-MiniLM-L6-v2 (optional: else the bundled embedder)
#   hb/              an ingested index of handbook/ (optional: else it is ingested, ~26 s on the H200)
#   qdata/           the adapter data built beforehand on a CPU (optional: else built here, ~1-2 min):
#                    python scripts/train_qwen_adapter.py build --questions questions.jsonl --out qdata
#   whl/             wheels of our pure-Python deps missing on the host (optional; unpacked to WORK/site)
# WORK: scratch (conversion, index copy, training data, run). OUT: everything worth keeping:
#   OUT/table.md        one Markdown table: extractive, Qwen base, Qwen + adapter (and the bundled 135M +
#                       default adapter when BUNDLED=1): accuracy (overall, by kind), citation precision,
#                       refusal P/R, key fact in passages, p50/p95 at concurrency CONC and sequential
#   OUT/adapter/        the trained adapter (bf16 safetensors + adapter_config.json + assistant-adapter.json)
#   OUT/eval-*/         answers.jsonl (with the model's raw answer), metrics.json, report.md per pass
#   OUT/train/          data manifest, verification counts, training summary; OUT/logs/ every log
# Steps (each prints a timestamp): setup → convert (once) → ingest (unless BUNDLE/hb) → build the adapter
# data (CPU, verified targets) → train (≤ ~3 min) → serve-llm (base + adapter "ours", batching) →
# `assistant eval --concurrency CONC` over the dev set → a sequential pass on SEQ_N questions → table.
# Expected on an H200: ~8-9 minutes in all. Every step before the eval is skipped when its output is in WORK,
# so a run cut at 10 minutes is resumed by running the same command again.
# Knobs (environment): CONC=16 SEQ_N=20 STEPS=100 MB=8 LIMIT=0
# (0 = every dev question) NO_SERVER=0 (1: Qwen in-process, as when fastapi is missing) DEVICE=cuda PORT=8765 BUNDLED=0 PYTHON=python3 SEQ_LEN=3072 CTX=12000 SOURCES=8
# PASSAGE_CHARS=3000 MAX_NEW=160 QUESTIONS=tests/data/dev_questions.jsonl; the CPU smoke test
# (tests/test_gpu_answers_script.py) shrinks them all.
set -euo pipefail
BUNDLE=$(realpath "$1"); WORK=$(realpath -m "$2"); OUT=$(realpath -m "$3")
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
CONC=${CONC:-16}; SEQ_N=${SEQ_N:-20}; STEPS=${STEPS:-100}; MB=${MB:-8}; LIMIT=${LIMIT:-0}
DEVICE=${DEVICE:-cuda}; PORT=${PORT:-8765}; BUNDLED=${BUNDLED:-0}; SEQ_LEN=${SEQ_LEN:-3072}
GB=${GB:-32}; MAX_NEW=${MAX_NEW:-160}; QUESTIONS=${QUESTIONS:-tests/data/dev_questions.jsonl}
mkdir -p "$WORK" "$OUT/logs" "$OUT/train"
export PYTHONPATH="$WORK/site:$REPO" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export ASSISTANT_MODEL_CACHE_DIR="$WORK/cache"
[ -d "$BUNDLE/minilm" ] && export ASSISTANT_EMBEDDING__MODEL="$BUNDLE/minilm"
cd "$REPO"
T0=$(date +%s)
step() { echo "== $1 $(date -u +%T) (+$(( $(date +%s) - T0 )) s)"; }

step setup
if [ -d "$BUNDLE/whl" ] && [ ! -e "$WORK/site/.done" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$BUNDLE"/whl/*.whl
  touch "$WORK/site/.done"
fi
$PY -c "import torch, assistant.cli; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

step convert
if [ -e "$BUNDLE/qwen15/config.json" ]; then MODEL="$BUNDLE/qwen15"
else
  MODEL="$WORK/qwen15"
  [ -e "$MODEL/config.json" ] || $PY -m assistant.llm.gguf_convert "$BUNDLE/qwen15.gguf" "$MODEL" 2>&1 | tail -3
fi

step ingest
if [ ! -e "$WORK/hb/store.sqlite" ]; then
  if [ -d "$BUNDLE/hb" ]; then cp -r "$BUNDLE/hb" "$WORK/hb"
  else ASSISTANT_DATA_DIR="$WORK/hb" $PY -m assistant ingest "$BUNDLE/handbook" 2>&1 | tail -2; fi
fi

step "adapter data"
[ -e "$WORK/qdata/manifest.json" ] || [ ! -e "$BUNDLE/qdata/manifest.json" ] || cp -r "$BUNDLE/qdata" "$WORK/qdata"
[ -e "$WORK/qdata/manifest.json" ] || $PY scripts/train_qwen_adapter.py build --handbook "$BUNDLE/handbook/content" \
    --questions "$BUNDLE/questions.jsonl" --out "$WORK/qdata" ${BUILD_EXTRA:-} 2>&1 | tail -3
cp "$WORK/qdata/manifest.json" "$OUT/train/data_manifest.json"

step "adapter train"
train() {  # $1 = micro-batch
  $PY scripts/train_qwen_adapter.py train --data "$WORK/qdata" --model "$MODEL" --out "$WORK/qrun" --device "$DEVICE" \
    --r 16 --targets q_proj,k_proj,v_proj,o_proj --lr 2e-4 --epochs 1 --max-steps "$STEPS" \
    --global-batch "$GB" --micro-batch "$1" --seq-len "$SEQ_LEN" --eval-limit 0 ${TRAIN_EXTRA:-} > "$OUT/logs/train.log" 2>&1
}
if [ ! -e "$WORK/qrun/summary.json" ]; then
  train "$MB" || { tail -5 "$OUT/logs/train.log"; echo "retrying at micro-batch $((MB / 2))"; rm -rf "$WORK/qrun"; train $((MB / 2)); }
fi
grep -E "^trained|^adapter written" "$OUT/logs/train.log" 2>/dev/null || true
rm -rf "$OUT/adapter"; cp -r "$WORK/qrun/adapter" "$OUT/adapter"; cp "$WORK/qrun/summary.json" "$OUT/train/summary.json"
[ "${STOP_AFTER:-}" = train ] && { step "stopped after training (STOP_AFTER=train)"; exit 0; }

step serve
export ASSISTANT_DATA_DIR="$WORK/hb" ASSISTANT_LLM__DEVICE="$DEVICE"
BASE_ID=$(basename "$MODEL")
# the long-context model reads more and larger passages than the CPU default (5 × 2,000 characters):
# answering.model_* apply because llm.context_tokens >= answering.model_context_tokens (8192)
COMMON="llm.context_tokens=${CTX:-12000},llm.max_new_tokens=$MAX_NEW"
COMMON="$COMMON,answering.model_sources=${SOURCES:-8},answering.model_passage_chars=${PASSAGE_CHARS:-3000}"
if [ "${NO_SERVER:-0}" != 1 ] && $PY -c "import fastapi, uvicorn, httpx" 2>/dev/null; then
  $PY -m assistant serve-llm --base "$MODEL" --adapter "ours=$WORK/qrun/adapter" --port "$PORT" \
      --max-batch 32 > "$OUT/logs/serve-llm.log" 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 300); do
    $PY -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null && break
    kill -0 $SERVER 2>/dev/null || { tail -20 "$OUT/logs/serve-llm.log"; exit 1; }
    sleep 1
  done
  LONG="llm.endpoint=http://127.0.0.1:$PORT/v1,llm.model=$BASE_ID,$COMMON"
  V_BASE="qwen-base:$LONG,llm.adapter=none"
  V_OURS="qwen-adapter:$LONG,llm.adapter=ours"
else
  # no fastapi/uvicorn/httpx on this host (carry their wheels in BUNDLE/whl): the model answers in-process,
  # one question at a time, so only the first 40 questions fit the time budget
  echo "!! fastapi/uvicorn/httpx missing: evaluating Qwen in-process, one at a time, LIMIT=${LIMIT_INPROC:-40}"
  LIMIT=${LIMIT_INPROC:-40}; CONC=1; WHERE="in-process (no server), one question at a time"
  V_BASE="qwen-base:llm.model=$MODEL,llm.adapter=none,llm.device=$DEVICE,$COMMON"
  V_OURS="qwen-adapter:llm.model=$MODEL,llm.adapter=$WORK/qrun/adapter,llm.device=$DEVICE,$COMMON"
fi
V_EXT="extractive:llm.model=none"

step "eval (concurrency $CONC)"
$PY -m assistant eval "$QUESTIONS" --out "$OUT/eval-concurrent" --concurrency "$CONC" --warmup 2 --limit "$LIMIT" \
    --variant "$V_EXT" --variant "$V_BASE" --variant "$V_OURS" > "$OUT/logs/eval-concurrent.log" 2>&1 \
  || { tail -30 "$OUT/logs/eval-concurrent.log"; exit 1; }
tail -28 "$OUT/logs/eval-concurrent.log"

step "eval sequential ($SEQ_N questions, latency)"
$PY -m assistant eval "$QUESTIONS" --out "$OUT/eval-sequential" --concurrency 1 --warmup 2 --limit "$SEQ_N" \
    --variant "$V_EXT" --variant "$V_OURS" ${SEQ_BASE:+--variant "$V_BASE"} > "$OUT/logs/eval-sequential.log" 2>&1 \
  || { tail -30 "$OUT/logs/eval-sequential.log"; exit 1; }
[ -n "${SERVER:-}" ] && kill $SERVER 2>/dev/null || true

if [ "$BUNDLED" = 1 ]; then
  step "eval bundled 135M + default adapter (in-process)"
  timeout "${BUNDLED_TIMEOUT:-150}" $PY -m assistant eval "$QUESTIONS" --out "$OUT/eval-bundled" --limit "$LIMIT" \
      --variant "bundled-adapter:llm.model=bundled,llm.adapter=default,llm.device=$DEVICE" \
      > "$OUT/logs/eval-bundled.log" 2>&1 || echo "bundled eval did not finish (see logs/eval-bundled.log)"
fi

step table
$PY scripts/answers_table.py "$OUT" --concurrency "$CONC" --seq-n "$SEQ_N" --where "${WHERE:-behind \`assistant serve-llm\`}" | tee "$OUT/table.md"
step "done in $(( $(date +%s) - T0 )) s"
