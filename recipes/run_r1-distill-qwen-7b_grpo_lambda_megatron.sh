#!/usr/bin/env bash
# GRPO-λ, Megatron (TP 2 x PP 2) on one 8-GPU node; matched GRPO baseline: the same name with _grpo.
exec bash "$(dirname "$0")/run.sh" r1-distill-qwen-7b grpo_lambda megatron "$@"
