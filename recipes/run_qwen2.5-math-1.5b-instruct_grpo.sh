#!/usr/bin/env bash
# GRPO, FSDP on one 8-GPU node; the matched baseline of the _grpo_lambda script.
exec bash "$(dirname "$0")/run.sh" qwen2.5-math-1.5b-instruct grpo fsdp "$@"
