#!/usr/bin/env bash
# GRPO-λ on Llama-3.1-8B-Instruct: Megatron (TP 2 x CP 2), several nodes of 8 GPUs, submitted with `ray job submit`.
# Matched GRPO baseline: run_llama3.1-8b-instruct_grpo_megatron_multinode.sh (identical except the GRPO-λ switches).
#
# Start a Ray cluster first (details: recipes/README.md, "Multi-node"):
#   head node:        ray start --head --dashboard-host=0.0.0.0 --num-gpus=8
#   every other node: ray start --address=<head-ip>:6379 --num-gpus=8
# then, on the head node (verl-lambda installed on every node, data and model on shared storage):
#   NNODES=4 bash recipes/run_llama3.1-8b-instruct_grpo_lambda_megatron_multinode.sh [hydra overrides...]
#   TRACE=both bash recipes/run_llama3.1-8b-instruct_grpo_lambda_megatron_multinode.sh
#   VERL_LAMBDA_DRY_RUN=1 bash recipes/run_llama3.1-8b-instruct_grpo_lambda_megatron_multinode.sh   # compose and check the config on a CPU, start nothing
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-meta-llama/Llama-3.1-8B-Instruct}
DATA_DIR=${DATA_DIR:-$HOME/data/grpo_lambda}
TRAIN_FILES=${TRAIN_FILES:-"['$DATA_DIR/math.parquet','$DATA_DIR/gsm8k.parquet']"}
VAL_FILES=${VAL_FILES:-"['$DATA_DIR/aime24.parquet','$DATA_DIR/math500.parquet','$DATA_DIR/olympiadbench.parquet','$DATA_DIR/minerva_math.parquet','$DATA_DIR/amc23.parquet']"}

# GRPO-λ, paper defaults: λ = 0.99, advantage clamp -0.1, γ = 1
TRACE=${TRACE:-recent}          # recent | both
LAM=${LAM:-0.99}
GAMMA=${GAMMA:-1.0}
ADV_CLAMP=${ADV_CLAMP:--0.1}

MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-8192}
# Paper setting (768-token responses for 7B/8B models):
# MAX_RESPONSE_LENGTH=768
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-128}        # prompts per step
N_RESPONSES=${N_RESPONSES:-8}                    # responses per prompt (one group)
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-64}   # prompts per optimizer update
ACTOR_LR=${ACTOR_LR:-1e-6}
TOTAL_EPOCHS=${TOTAL_EPOCHS:-5}
ROLLOUT_TP=${ROLLOUT_TP:-2}
TP=${TP:-2}
PP=${PP:-1}
CP=${CP:-2}
NNODES=${NNODES:-4}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
ACTOR_MAX_TOKEN_LEN=$(( (MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 2 ))
INFER_MAX_TOKEN_LEN=$(( (MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 3 ))

PROJECT_NAME=${PROJECT_NAME:-verl_lambda_math}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-llama3.1-8b-instruct_grpo_lambda_${TRACE}_megatron_${NNODES}nodes}
LOGGER=${LOGGER:-'["console","wandb"]'}

RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
RUNTIME_ENV=${RUNTIME_ENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/runtime_env.yaml}
# A dry run composes and checks the config here instead of submitting the job.
case "${VERL_LAMBDA_DRY_RUN:-0}" in "" | 0 | false | no | off) DRY_RUN=0 ;; *) DRY_RUN=1 ;; esac
for arg in "$@"; do
    if [ "$arg" = --dry-run ]; then DRY_RUN=1; fi
done
if [ "$DRY_RUN" = 1 ]; then
    SUBMIT=()
else
    SUBMIT=(ray job submit --address="$RAY_ADDRESS" --runtime-env="$RUNTIME_ENV" --no-wait --)
fi

"${SUBMIT[@]}" python3 -m verl_lambda.main_ppo \
    model_engine=megatron \
    algorithm.adv_estimator=grpo_lambda \
    +algorithm.grpo_lambda.adv_clamp=$ADV_CLAMP \
    actor_rollout_ref.actor.policy_loss._target_=verl_lambda.config.GRPOLambdaLossConfig \
    actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda \
    +actor_rollout_ref.actor.policy_loss.lam=$LAM \
    +actor_rollout_ref.actor.policy_loss.gamma=$GAMMA \
    +actor_rollout_ref.actor.policy_loss.trace=$TRACE \
    algorithm.use_kl_in_reward=False \
    data.train_files="$TRAIN_FILES" \
    data.val_files="$VAL_FILES" \
    data.train_batch_size=$TRAIN_BATCH_SIZE \
    data.max_prompt_length=$MAX_PROMPT_LENGTH \
    data.max_response_length=$MAX_RESPONSE_LENGTH \
    data.filter_overlong_prompts=True \
    data.truncation='error' \
    reward.custom_reward_function.path=pkg://verl_lambda.math_reward \
    reward.custom_reward_function.name=compute_score \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=$ACTOR_LR \
    actor_rollout_ref.actor.ppo_mini_batch_size=$PPO_MINI_BATCH_SIZE \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$ACTOR_MAX_TOKEN_LEN \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.actor.megatron.tensor_model_parallel_size=$TP \
    actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=$PP \
    actor_rollout_ref.actor.megatron.context_parallel_size=$CP \
    actor_rollout_ref.actor.megatron.param_offload=False \
    actor_rollout_ref.actor.megatron.optimizer_offload=False \
    actor_rollout_ref.actor.megatron.override_transformer_config.recompute_granularity=full \
    actor_rollout_ref.actor.megatron.override_transformer_config.recompute_method=uniform \
    actor_rollout_ref.actor.megatron.override_transformer_config.recompute_num_layers=1 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.n=$N_RESPONSES \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$INFER_MAX_TOKEN_LEN \
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=$INFER_MAX_TOKEN_LEN \
    actor_rollout_ref.ref.megatron.param_offload=True \
    trainer.critic_warmup=0 \
    trainer.logger="$LOGGER" \
    trainer.project_name="$PROJECT_NAME" \
    trainer.experiment_name="$EXPERIMENT_NAME" \
    trainer.n_gpus_per_node=$N_GPUS_PER_NODE \
    trainer.nnodes=$NNODES \
    trainer.save_freq=50 \
    trainer.test_freq=25 \
    trainer.total_epochs=$TOTAL_EPOCHS \
    "$@"
