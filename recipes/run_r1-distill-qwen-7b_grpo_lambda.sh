#!/usr/bin/env bash
# GRPO-λ on DeepSeek-R1-Distill-Qwen-7B: FSDP, one node of 8 GPUs.
# Matched GRPO baseline: run_r1-distill-qwen-7b_grpo.sh (identical except the GRPO-λ switches).
#
#   bash recipes/prepare_data.sh      # once: training and evaluation sets into $DATA_DIR
#   bash recipes/run_r1-distill-qwen-7b_grpo_lambda.sh [hydra overrides...]
#   TRACE=both bash recipes/run_r1-distill-qwen-7b_grpo_lambda.sh
#   VERL_LAMBDA_DRY_RUN=1 bash recipes/run_r1-distill-qwen-7b_grpo_lambda.sh   # compose and check the config on a CPU, start nothing
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}
DATA_DIR=${DATA_DIR:-$HOME/data/grpo_lambda}
TRAIN_FILES=${TRAIN_FILES:-"['$DATA_DIR/deepscaler.parquet']"}
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
TOTAL_EPOCHS=${TOTAL_EPOCHS:-2}
ROLLOUT_TP=${ROLLOUT_TP:-2}
NNODES=${NNODES:-1}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
ACTOR_MAX_TOKEN_LEN=$(( (MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 2 ))
INFER_MAX_TOKEN_LEN=$(( (MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 3 ))

PROJECT_NAME=${PROJECT_NAME:-verl_lambda_math}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-r1-distill-qwen-7b_grpo_lambda_${TRACE}}
LOGGER=${LOGGER:-'["console","wandb"]'}

python3 -m verl_lambda.main_ppo \
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
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.n=$N_RESPONSES \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$INFER_MAX_TOKEN_LEN \
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=$INFER_MAX_TOKEN_LEN \
    actor_rollout_ref.ref.fsdp_config.param_offload=True \
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
