#!/usr/bin/env bash
# GRPO-λ or its matched GRPO baseline on Qwen2.5-7B with OpenRLHF 0.11.x (Ray + vLLM hybrid engine,
# DeepSpeed ZeRO-3), one node of 8 GPUs, through python -m verl_lambda.patches.openrlhf (--lambda.off: unpatched).
#
#   bash recipes/openrlhf/run.sh METHOD [more train_ppo_ray / --lambda.* args]   METHOD: grpo_lambda | grpo
#   TRACE=both bash recipes/openrlhf/run.sh grpo_lambda                    # any GRPO-λ setting, recipes/README.md
#   VERL_LAMBDA_DRY_RUN=1 bash recipes/openrlhf/run.sh grpo_lambda         # check the settings and OpenRLHF's parsing
# Multi-node: `ray start --head` here and `ray start --address=<head>:6379` on the others, set ACTOR_NODES /
# N_GPUS_PER_NODE / VLLM_ENGINES, run this on the head node; verl-lambda and OpenRLHF on every node.
set -euo pipefail
METHOD=$1
shift
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/../lib.sh"

MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B}
DATA_DIR=${DATA_DIR:-$HOME/data/grpo_lambda}
TRAIN_FILES=${TRAIN_FILES:-"$DATA_DIR/math.parquet,$DATA_DIR/gsm8k.parquet"}
EVAL_FILES=${EVAL_FILES:-"$DATA_DIR/aime24.parquet,$DATA_DIR/math500.parquet,$DATA_DIR/olympiadbench.parquet"}
EVAL_FILES+=",$DATA_DIR/minerva_math.parquet,$DATA_DIR/amc23.parquet"
REWARD_FUNC=${REWARD_FUNC:-$HERE/math_reward_func.py}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-4096}  # the paper's: 768 for 7B/8B models
ROLLOUT_BATCH_SIZE=${ROLLOUT_BATCH_SIZE:-128}     # prompts per step
N_SAMPLES=${N_SAMPLES:-8}                         # responses per prompt (one group)
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-512}         # responses per optimizer update (64 prompts)
ACTOR_LR=${ACTOR_LR:-1e-6}
NUM_EPISODES=${NUM_EPISODES:-5}
ACTOR_NODES=${ACTOR_NODES:-1}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
VLLM_ENGINES=${VLLM_ENGINES:-4}
VLLM_TP=${VLLM_TP:-2}
MAX_TOKENS_PER_GPU=$(((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 2))

case "$METHOD" in
    grpo_lambda) METHOD_ARGS=() && export_grpo_lambda_settings && RUN_NAME=qwen2.5-7b_grpo_lambda$GRPO_LAMBDA_SUFFIX ;;
    grpo) METHOD_ARGS=(--lambda.off) && RUN_NAME=qwen2.5-7b_grpo ;;
    *) echo "recipes/openrlhf/run.sh: error: METHOD must be grpo_lambda or grpo, got '$METHOD'" >&2 && exit 2 ;;
esac
SAVE_PATH=${SAVE_PATH:-./exp/openrlhf/$RUN_NAME}

CKPT=(
    --actor.model_name_or_path "$MODEL_PATH"
    --ckpt.output_dir "$SAVE_PATH"
    --ckpt.path "$SAVE_PATH/ckpt"
    --ckpt.save_hf
    --ckpt.max_num 3
    --ckpt.save_steps 50
)
ROLLOUT=(
    --reward.remote_url "$REWARD_FUNC"
    --data.prompt_dataset "$TRAIN_FILES"
    --data.input_key prompt
    --data.label_key reward_model
    --data.apply_chat_template
    --data.max_len $((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
    --rollout.max_new_tokens "$MAX_RESPONSE_LENGTH"
    --rollout.temperature 1.0
    --rollout.batch_size "$ROLLOUT_BATCH_SIZE"
    --rollout.n_samples_per_prompt "$N_SAMPLES"
    --train.batch_size "$TRAIN_BATCH_SIZE"
    --train.max_epochs 1
    --train.num_episodes "$NUM_EPISODES"
    --train.dynamic_batch_enable
    --train.max_tokens_per_gpu "$MAX_TOKENS_PER_GPU"
    --rollout.max_tokens_per_gpu $((MAX_TOKENS_PER_GPU * 2))
    --ds.packing_samples
)
ENGINE=(
    --ref.num_nodes "$ACTOR_NODES"
    --ref.num_gpus_per_node "$N_GPUS_PER_NODE"
    --actor.num_nodes "$ACTOR_NODES"
    --actor.num_gpus_per_node "$N_GPUS_PER_NODE"
    --vllm.num_engines "$VLLM_ENGINES"
    --vllm.tensor_parallel_size "$VLLM_TP"
    --vllm.gpu_memory_utilization 0.6
    --vllm.sync_backend nccl
    --vllm.enforce_eager
    --vllm.enable_sleep
    --ds.enable_sleep
    --train.colocate_all
    --ds.zero_stage 3
    --ds.param_dtype bf16
    --actor.gradient_checkpointing_enable
)
# GRPO: group-normalised outcome advantage, KL to the reference as a loss term (k3 = verl's low_var_kl),
# PPO clip 0.2 with verl's dual clip 3.0, token-mean loss.
OPTIMIZER=(
    --algo.advantage.estimator group_norm
    --algo.kl.use_loss
    --algo.kl.estimator k3
    --algo.kl.init_coef 0.001
    --actor.eps_clip 0.2
    --actor.dual_clip 3.0
    --actor.loss_agg_mode token-mean
    --actor.adam.lr "$ACTOR_LR"
)
LOG=(
    --eval.dataset "$EVAL_FILES"
    --eval.steps 25
    --logger.logging_steps 1
    --logger.tensorboard_dir "$SAVE_PATH/runs"
    --logger.wandb.project verl_lambda_math
    --logger.wandb.run_name "openrlhf_$RUN_NAME"
)
if [ -n "${WANDB_API_KEY:-}" ]; then LOG+=(--logger.wandb.key "$WANDB_API_KEY"); fi

set -x
python3 -m verl_lambda.patches.openrlhf "${METHOD_ARGS[@]}" "${CKPT[@]}" "${ROLLOUT[@]}" "${ENGINE[@]}" \
    "${OPTIMIZER[@]}" "${LOG[@]}" "$@"
