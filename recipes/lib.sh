#!/usr/bin/env bash
# The one launch body of every verl recipe, in verl's example style: named override arrays, one launch.
# Sourced by recipes/run.sh (model table) and recipes/paper/run.sh (the authors' setup), which set
# MODEL_KEY, METHOD (grpo_lambda | grpo), ENGINE (fsdp | megatron | megatron_multinode) and the model's
# defaults first. Every UPPER_CASE variable below can be set from the environment; a value set here
# is the common default for every recipe.
#
# METHOD is the only block in which a GRPO-λ run differs from its GRPO baseline. Its settings come from
# python -m verl_lambda.launch.main_ppo: defaults from verl_lambda.core.settings, GRPO_LAMBDA_<NAME> variables,
# then Hydra overrides on the command line ("$@", last, so they win).

# The project's words for "on" (verl_lambda.cli.TRUE_WORDS).
is_true() { case "${1,,}" in 1 | true | yes | on) return 0 ;; *) return 1 ;; esac }

# Short names the recipes read for GRPO-λ settings: TRACE=both is GRPO_LAMBDA_TRACE=both, which both
# launchers read. Exports them and sets GRPO_LAMBDA_SUFFIX for run names (_both, _lam0.9, ...).
export_grpo_lambda_settings() {
    local pair short name
    GRPO_LAMBDA_SUFFIX=""
    for pair in LAM:LAM GAMMA:GAMMA TRACE:TRACE ADV_CLAMP:ADV_CLAMP ANCHOR:TRACE_ANCHOR \
        APPLICATION:TRACE_APPLICATION EPSILON:TRACE_EPSILON NORM:TRACE_NORM; do
        short=${pair%%:*} name=${pair#*:}
        if [ -n "${!short:-}" ]; then
            export "GRPO_LAMBDA_$name=${!short}"
            GRPO_LAMBDA_SUFFIX+=$([ "$short" = TRACE ] && echo "_${!short}" || echo "_${short,,}${!short}")
        fi
    done
}

launch_recipe() {
    DATA_DIR=${DATA_DIR:-$HOME/data/grpo_lambda}
    local train="" set
    for set in $TRAIN_SETS; do train+="'$DATA_DIR/$set.parquet',"; done
    TRAIN_FILES=${TRAIN_FILES:-"[${train%,}]"}
    local val=""
    for set in ${VAL_SETS:-aime24 math500 olympiadbench minerva_math amc23}; do val+="'$DATA_DIR/$set.parquet',"; done
    VAL_FILES=${VAL_FILES:-"[${val%,}]"}
    MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
    TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-128}        # prompts per step
    N_RESPONSES=${N_RESPONSES:-8}                    # responses per prompt (one group)
    PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-64}   # prompts per optimizer update
    MICRO_BATCH=${MICRO_BATCH:-}                     # responses per GPU per micro-batch; empty: dynamic batches
    ACTOR_LR=${ACTOR_LR:-1e-6}
    LORA_RANK=${LORA_RANK:-0}                        # 0: full fine-tuning
    LORA_ALPHA=${LORA_ALPHA:-32}
    NNODES=${NNODES:-1}
    N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
    TP=${TP:-2} PP=${PP:-2} CP=${CP:-1}              # Megatron tensor / pipeline / context parallel sizes
    SAVE_FREQ=${SAVE_FREQ:-50}
    TEST_FREQ=${TEST_FREQ:-25}
    PROJECT_NAME=${PROJECT_NAME:-verl_lambda_math}
    LOGGER=${LOGGER:-'["console","wandb"]'}
    local sequence=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))

    local suffix=""
    if [ "$METHOD" = grpo_lambda ]; then
        METHOD_ARGS=(
            algorithm.adv_estimator=grpo_lambda
            actor_rollout_ref.actor.policy_loss._target_=verl_lambda.verl.config.GRPOLambdaLossConfig
            actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda
        )
        export_grpo_lambda_settings
        suffix=$GRPO_LAMBDA_SUFFIX
    else
        METHOD_ARGS=(algorithm.adv_estimator=grpo actor_rollout_ref.actor.policy_loss.loss_mode=vanilla)
    fi
    local engine_suffix=""
    case "$ENGINE" in
        megatron) engine_suffix=_megatron ;;
        megatron_multinode) engine_suffix=_megatron_${NNODES}nodes ;;
    esac
    EXPERIMENT_NAME=${EXPERIMENT_NAME:-${MODEL_KEY}_${METHOD}${suffix}${engine_suffix}}

    DATA=(
        data.train_files="$TRAIN_FILES"
        data.val_files="$VAL_FILES"
        data.train_batch_size=$TRAIN_BATCH_SIZE
        data.max_prompt_length=$MAX_PROMPT_LENGTH
        data.max_response_length=$MAX_RESPONSE_LENGTH
        data.filter_overlong_prompts=True
        data.truncation='error'
        reward.custom_reward_function.path=pkg://verl_lambda.math.reward
        reward.custom_reward_function.name=compute_score
        algorithm.use_kl_in_reward=False
    )
    MODEL=(
        actor_rollout_ref.model.path="$MODEL_PATH"
        actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.model.enable_gradient_checkpointing=True
    )
    ACTOR=(
        actor_rollout_ref.actor.optim.lr=$ACTOR_LR
        actor_rollout_ref.actor.ppo_mini_batch_size=$PPO_MINI_BATCH_SIZE
        actor_rollout_ref.actor.use_kl_loss=True
        actor_rollout_ref.actor.kl_loss_coef=0.001
        actor_rollout_ref.actor.kl_loss_type=low_var_kl
        actor_rollout_ref.actor.entropy_coeff=0
    )
    ROLLOUT=(
        actor_rollout_ref.rollout.name=vllm
        actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP
        actor_rollout_ref.rollout.gpu_memory_utilization=0.6
        actor_rollout_ref.rollout.n=$N_RESPONSES
        actor_rollout_ref.rollout.temperature=1.0
    )
    REF=()
    if [ -z "$MICRO_BATCH" ]; then  # dynamic batches: token budgets of 2x (training) and 3x (log-probs) a sequence
        ACTOR+=(actor_rollout_ref.actor.use_dynamic_bsz=True
                actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$((sequence * 2)))
        ROLLOUT+=(actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True
                  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$((sequence * 3)))
        REF+=(actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True
              actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=$((sequence * 3)))
    else
        ACTOR+=(actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=$MICRO_BATCH)
        ROLLOUT+=(actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=$MICRO_BATCH)
        REF+=(actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=$MICRO_BATCH)
    fi
    if [ "$LORA_RANK" -gt 0 ]; then
        MODEL+=(actor_rollout_ref.model.lora_rank=$LORA_RANK actor_rollout_ref.model.lora_alpha=$LORA_ALPHA)
        ROLLOUT+=(actor_rollout_ref.rollout.load_format=safetensors actor_rollout_ref.rollout.layered_summon=True)
    fi
    if [ "$ENGINE" = fsdp ]; then
        ENGINE_ARGS=(
            actor_rollout_ref.actor.fsdp_config.param_offload=False
            actor_rollout_ref.actor.fsdp_config.optimizer_offload=False
            actor_rollout_ref.ref.fsdp_config.param_offload=True
        )
    else
        ENGINE_ARGS=(
            --config-name=ppo_megatron_trainer  # the form every supported verl has (0.7.x: no model_engine)
            actor_rollout_ref.actor.megatron.tensor_model_parallel_size=$TP
            actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=$PP
            actor_rollout_ref.actor.megatron.context_parallel_size=$CP
            actor_rollout_ref.actor.megatron.param_offload=False
            actor_rollout_ref.actor.megatron.optimizer_offload=False
            actor_rollout_ref.actor.megatron.override_transformer_config.recompute_granularity=full
            actor_rollout_ref.actor.megatron.override_transformer_config.recompute_method=uniform
            actor_rollout_ref.actor.megatron.override_transformer_config.recompute_num_layers=1
            actor_rollout_ref.ref.megatron.param_offload=True
        )
    fi
    TRAINER=(
        trainer.critic_warmup=0
        trainer.logger="$LOGGER"
        trainer.project_name="$PROJECT_NAME"
        trainer.experiment_name="$EXPERIMENT_NAME"
        trainer.n_gpus_per_node=$N_GPUS_PER_NODE
        trainer.nnodes=$NNODES
        trainer.save_freq=$SAVE_FREQ
        trainer.test_freq=$TEST_FREQ
        trainer.total_epochs=$TOTAL_EPOCHS
    )

    # Several nodes: submit a Ray job (recipes/README.md, "Multi-node"); a dry run checks the config here.
    local submit=() arg dry_run=0
    is_true "${VERL_LAMBDA_DRY_RUN:-0}" && dry_run=1
    for arg in "$@"; do [ "$arg" = --dry-run ] && dry_run=1; done
    if [ "$ENGINE" = megatron_multinode ] && [ "$dry_run" = 0 ]; then
        local here
        here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
        submit=(ray job submit --address="${RAY_ADDRESS:-http://127.0.0.1:8265}"
                --runtime-env="${RUNTIME_ENV:-$here/runtime_env.yaml}" --no-wait --)
    fi
    "${submit[@]}" python3 -m verl_lambda.launch.main_ppo "${METHOD_ARGS[@]}" "${DATA[@]}" "${MODEL[@]}" "${ACTOR[@]}" \
        "${ROLLOUT[@]}" "${REF[@]}" "${ENGINE_ARGS[@]}" "${TRAINER[@]}" "$@"
}
