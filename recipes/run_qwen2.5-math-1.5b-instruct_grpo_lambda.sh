#!/usr/bin/env bash
# GRPO-λ, FSDP on one 8-GPU node; matched GRPO baseline: the same name with _grpo.
exec bash "$(dirname "$0")/run.sh" qwen2.5-math-1.5b-instruct grpo_lambda fsdp "$@"
