#!/usr/bin/env bash
# The GRPO-λ authors' setup (their verl fork's examples/grpol_trainer and grpo_trainer scripts): a 1.5B model
# with LoRA on one of their four training sets, GRPO-λ or its matched GRPO baseline, FSDP on 2 GPUs.
#
#   bash recipes/paper/run.sh MODEL SET METHOD [hydra overrides...]
#     MODEL  qwen2.5-1.5b-instruct | r1-distill-qwen-1.5b   SET gsm8k | math12k | math_rl_16k | orz_57k
#     METHOD grpo_lambda | grpo
#   ANCHOR=token TRACE=both bash recipes/paper/run.sh ...   # any GRPO-λ setting (recipes/README.md)
#   VERL_LAMBDA_DRY_RUN=1 bash recipes/paper/run.sh ...     # compose and check on a CPU, start nothing
# Data: python -m verl_lambda.math.data --paper --out-dir "$DATA_DIR" (and the benchmarks for validation).
set -euo pipefail
fail() { echo "recipes/paper/run.sh: error: $*" >&2; exit 2; }
[ $# -ge 3 ] || fail "usage: bash recipes/paper/run.sh MODEL SET METHOD [hydra overrides...]"
MODEL_KEY=$1 SET=$2 METHOD=$3
shift 3
case "$MODEL_KEY" in
    qwen2.5-1.5b-instruct) HF_ID=Qwen/Qwen2.5-1.5B-Instruct ;;
    r1-distill-qwen-1.5b) HF_ID=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B ;;
    *) fail "MODEL must be qwen2.5-1.5b-instruct or r1-distill-qwen-1.5b, got '$MODEL_KEY'" ;;
esac
case "$SET" in
    gsm8k) PROMPTS=8 ;;  # their gsm8k scripts: 8 prompts per step
    math12k | math_rl_16k | orz_57k) PROMPTS=64 ;;
    *) fail "SET must be gsm8k, math12k, math_rl_16k or orz_57k, got '$SET'" ;;
esac
case "$METHOD" in grpo_lambda | grpo) ;; *) fail "METHOD must be grpo_lambda or grpo, got '$METHOD'" ;; esac
if [ "$METHOD" = grpo_lambda ]; then  # the authors' conventions; λ = 0.99 and the −0.1 clamp are the defaults
    export GRPO_LAMBDA_TRACE_ANCHOR=${GRPO_LAMBDA_TRACE_ANCHOR:-end}
    export GRPO_LAMBDA_TRACE=${GRPO_LAMBDA_TRACE:-recent}
    export GRPO_LAMBDA_TRACE_EPSILON=${GRPO_LAMBDA_TRACE_EPSILON:-1e-7}
fi

MODEL_KEY=${MODEL_KEY}_$SET ENGINE=fsdp
MODEL_PATH=${MODEL_PATH:-$HF_ID}
TRAIN_SETS=$SET
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-512}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-3072}
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-$PROMPTS}
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-$PROMPTS}  # one update per step
MICRO_BATCH=${MICRO_BATCH:-32}
ACTOR_LR=${ACTOR_LR:-3e-6}
LORA_RANK=${LORA_RANK:-64}
LORA_ALPHA=${LORA_ALPHA:-32}
ROLLOUT_TP=${ROLLOUT_TP:-2}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-2}
TOTAL_EPOCHS=${TOTAL_EPOCHS:-15}
SAVE_FREQ=${SAVE_FREQ:-20}
TEST_FREQ=${TEST_FREQ:-5}
PROJECT_NAME=${PROJECT_NAME:-verl_lambda_paper}

# Also theirs: bf16 weights for actor and reference, data in file order, no validation before training.
AUTHORS=(
    actor_rollout_ref.actor.fsdp_config.model_dtype=bf16
    actor_rollout_ref.ref.fsdp_config.model_dtype=bf16
    data.shuffle=False
    trainer.val_before_train=False
)
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
launch_recipe "${AUTHORS[@]}" "$@"
