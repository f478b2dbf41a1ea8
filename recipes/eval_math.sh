#!/usr/bin/env bash
# Score a model on AIME24, MATH500, OlympiadBench, Minerva Math and AMC23: pass@1 averaged over
# N_SAMPLES sampled responses per problem, added as one row to a markdown table ($RESULTS_TABLE).
#
# It runs verl's trainer in validation-only mode (same reward, chat template and rollout engine
# as training), logs the metrics with verl's file logger, then builds the table.
#
#   MODEL_PATH=Qwen/Qwen2.5-7B-Instruct bash recipes/eval_math.sh           # a Hugging Face model
#   MODEL_PATH=Qwen/Qwen2.5-7B-Instruct \
#   CKPT_DIR=checkpoints/verl_lambda_math/qwen2.5-7b-instruct_grpo_lambda_recent/global_step_500/actor \
#       bash recipes/eval_math.sh                                           # a verl checkpoint (merged first)
#   N_SAMPLES=32 LABEL=my-run bash recipes/eval_math.sh [hydra overrides...]
#   VERL_LAMBDA_DRY_RUN=1 bash recipes/eval_math.sh                         # check the config on a CPU
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-Math-1.5B-Instruct}  # base model: tokenizer/architecture of CKPT_DIR
CKPT_DIR=${CKPT_DIR:-}             # verl actor checkpoint (.../global_step_N/actor); empty: evaluate MODEL_PATH
CKPT_BACKEND=${CKPT_BACKEND:-fsdp} # fsdp | megatron: the engine that wrote CKPT_DIR
DATA_DIR=${DATA_DIR:-$HOME/data/grpo_lambda}
EVAL_SETS=${EVAL_SETS:-aime24 math500 olympiadbench minerva_math amc23}
EVAL_FILES=""
for set in $EVAL_SETS; do EVAL_FILES+="'$DATA_DIR/$set.parquet',"; done
EVAL_FILES="[${EVAL_FILES%,}]"

N_SAMPLES=${N_SAMPLES:-16}         # k: responses per problem; pass@1 is averaged over them
TEMPERATURE=${TEMPERATURE:-0.6}
TOP_P=${TOP_P:-0.95}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-3072}  # 3072 fits Qwen2.5-Math's 4096-token context; raise for other models
ROLLOUT_TP=${ROLLOUT_TP:-1}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
MAX_TOKEN_LEN=$(( (MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 3 ))

LABEL=${LABEL:-${CKPT_DIR:-$MODEL_PATH}}
OUT_DIR=${OUT_DIR:-eval_results}
RUN_NAME=$(printf '%s' "$LABEL" | tr -c 'A-Za-z0-9._-' '_')
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
RESULTS_TABLE=${RESULTS_TABLE:-$OUT_DIR/results.md}
METRICS_FILE=$OUT_DIR/$RUN_NAME.metrics.jsonl

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DRY_RUN=0
is_true "${VERL_LAMBDA_DRY_RUN:-0}" && DRY_RUN=1
for arg in "$@"; do [ "$arg" = --dry-run ] && DRY_RUN=1; done

if [ -n "$CKPT_DIR" ]; then
    # verl saves sharded checkpoints; evaluate their Hugging Face export.
    EXPORT=$CKPT_DIR/huggingface
    if [ ! -f "$EXPORT/model.safetensors.index.json" ] && [ ! -f "$EXPORT/model.safetensors" ]; then
        if [ "$DRY_RUN" = 1 ]; then
            echo "dry run: would merge $CKPT_DIR into $CKPT_DIR/huggingface"
        else
            python3 -m verl.model_merger merge --backend "$CKPT_BACKEND" \
                --local_dir "$CKPT_DIR" --target_dir "$CKPT_DIR/huggingface"
        fi
    fi
    MODEL_PATH=$CKPT_DIR/huggingface
fi

export VERL_FILE_LOGGER_PATH=$METRICS_FILE
rm -f "$METRICS_FILE"
python3 -m verl_lambda.launch.main_ppo \
    algorithm.adv_estimator=grpo \
    data.train_files="$EVAL_FILES" \
    data.val_files="$EVAL_FILES" \
    data.train_batch_size=64 \
    data.max_prompt_length=$MAX_PROMPT_LENGTH \
    data.max_response_length=$MAX_RESPONSE_LENGTH \
    data.filter_overlong_prompts=True \
    data.truncation='error' \
    reward.custom_reward_function.path=pkg://verl_lambda.math.reward \
    reward.custom_reward_function.name=compute_score \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$MAX_TOKEN_LEN \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.8 \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$MAX_TOKEN_LEN \
    actor_rollout_ref.rollout.val_kwargs.n=$N_SAMPLES \
    actor_rollout_ref.rollout.val_kwargs.do_sample=True \
    actor_rollout_ref.rollout.val_kwargs.temperature=$TEMPERATURE \
    actor_rollout_ref.rollout.val_kwargs.top_p=$TOP_P \
    algorithm.use_kl_in_reward=False \
    trainer.val_only=True \
    trainer.val_before_train=True \
    trainer.resume_mode=disable \
    trainer.logger='["console","file"]' \
    trainer.project_name=verl_lambda_eval \
    trainer.experiment_name="$RUN_NAME" \
    trainer.n_gpus_per_node=$N_GPUS_PER_NODE \
    trainer.nnodes=1 \
    +ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="$METRICS_FILE" \
    "$@"

if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: would add the row '$LABEL' to $RESULTS_TABLE"
else
    python3 -m verl_lambda.math.eval --metrics "$METRICS_FILE" --label "$LABEL" --table "$RESULTS_TABLE"
fi
