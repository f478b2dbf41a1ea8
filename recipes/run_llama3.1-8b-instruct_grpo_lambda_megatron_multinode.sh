#!/usr/bin/env bash
# GRPO-λ, Megatron (TP 2 x CP 2) on several nodes (ray job submit); matched GRPO baseline: the same name with _grpo.
exec bash "$(dirname "$0")/run.sh" llama3.1-8b-instruct grpo_lambda megatron_multinode "$@"
