#!/usr/bin/env bash
# GRPO, FSDP on one 8-GPU node; the matched baseline of the _grpo_lambda script.
exec bash "$(dirname "$0")/run.sh" r1-distill-qwen-1.5b grpo fsdp "$@"
