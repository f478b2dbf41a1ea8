#!/usr/bin/env bash
# GRPO, Megatron (TP 2 x CP 2) on several nodes (ray job submit); the matched baseline of the _grpo_lambda script.
exec bash "$(dirname "$0")/run.sh" qwen2.5-7b-instruct grpo megatron_multinode "$@"
