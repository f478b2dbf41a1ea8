#!/usr/bin/env bash
# GRPO, Megatron (TP 2 x CP 2) on several nodes (ray job submit); the matched baseline of the _grpo_lambda script.
exec bash "$(dirname "$0")/run.sh" llama3.1-8b-instruct grpo megatron_multinode "$@"
