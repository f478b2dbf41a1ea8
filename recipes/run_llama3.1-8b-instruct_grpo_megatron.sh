#!/usr/bin/env bash
# GRPO, Megatron (TP 2 x PP 2) on one 8-GPU node; the matched baseline of the _grpo_lambda script.
exec bash "$(dirname "$0")/run.sh" llama3.1-8b-instruct grpo megatron "$@"
