#!/usr/bin/env bash
# GRPO-λ or its matched GRPO baseline on math, one model of the table below, FSDP or Megatron.
#
#   bash recipes/run.sh MODEL METHOD ENGINE [hydra overrides...]     (the run_*.sh scripts call this)
#     MODEL  a key of the table; METHOD grpo_lambda | grpo; ENGINE fsdp | megatron | megatron_multinode
#   TRACE=both bash recipes/run.sh qwen2.5-7b-instruct grpo_lambda fsdp      # any GRPO-λ setting, recipes/README.md
#   VERL_LAMBDA_DRY_RUN=1 bash recipes/run.sh ...                            # compose and check on a CPU, start nothing
set -euo pipefail
MODEL_KEY=$1 METHOD=$2 ENGINE=$3
shift 3
fail() { echo "recipes/run.sh: error: $*" >&2; exit 2; }
case "$METHOD" in grpo_lambda | grpo) ;; *) fail "METHOD must be grpo_lambda or grpo, got '$METHOD'" ;; esac
case "$ENGINE" in
    fsdp | megatron | megatron_multinode) ;;
    *) fail "ENGINE must be fsdp, megatron or megatron_multinode, got '$ENGINE'" ;;
esac

# Response lengths of today's reasoning runs (the paper's: 256 for the 1.5B models, 768 for 7B/8B);
# Qwen2.5-Math's context is 4096 tokens. "-": no multi-node recipe.
#                                                                        response   multi-node       rollout
# key                                 Hugging Face id             train sets  tokens  response  epochs  TP
model() { read -r HF_ID SETS RESPONSE MULTINODE_RESPONSE EPOCHS ROLLOUT <<<"$*"; }
case "$MODEL_KEY" in
    qwen2.5-math-1.5b-instruct) model Qwen/Qwen2.5-Math-1.5B-Instruct           math,gsm8k  3072    -      5  1 ;;
    r1-distill-qwen-1.5b)       model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B deepscaler  8192    -      2  1 ;;
    r1-distill-qwen-7b)         model deepseek-ai/DeepSeek-R1-Distill-Qwen-7B   deepscaler  8192    16384  2  2 ;;
    qwen2.5-7b-instruct)        model Qwen/Qwen2.5-7B-Instruct                  math,gsm8k  4096    8192   5  2 ;;
    llama3.1-8b-instruct)       model meta-llama/Llama-3.1-8B-Instruct          math,gsm8k  4096    8192   5  2 ;;
    *) fail "unknown model '$MODEL_KEY'; the models are the keys of the table in recipes/run.sh" ;;
esac
if [ "$ENGINE" = megatron_multinode ]; then
    [ "$MULTINODE_RESPONSE" = - ] && fail "$MODEL_KEY has no multi-node recipe"
    RESPONSE=$MULTINODE_RESPONSE NNODES=${NNODES:-4} PP=${PP:-1} CP=${CP:-2}
fi
MODEL_PATH=${MODEL_PATH:-$HF_ID}
TRAIN_SETS=${SETS//,/ }
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-$RESPONSE}
TOTAL_EPOCHS=${TOTAL_EPOCHS:-$EPOCHS}
ROLLOUT_TP=${ROLLOUT_TP:-$ROLLOUT}

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
launch_recipe "$@"
