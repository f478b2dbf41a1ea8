#!/usr/bin/env bash
# GRPO in OpenRLHF (unpatched), Qwen2.5-7B, one 8-GPU node; the matched baseline of run_qwen2.5-7b_grpo_lambda.sh.
exec bash "$(dirname "$0")/run.sh" grpo "$@"
