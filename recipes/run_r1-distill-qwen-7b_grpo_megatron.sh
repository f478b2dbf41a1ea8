#!/usr/bin/env bash
# GRPO, Megatron (TP 2 x PP 2) on one 8-GPU node; the matched baseline of the _grpo_lambda script.
exec bash "$(dirname "$0")/run.sh" r1-distill-qwen-7b grpo megatron "$@"
