#!/usr/bin/env bash
# GRPO-λ in OpenRLHF, Qwen2.5-7B, one 8-GPU node; matched GRPO baseline: run_qwen2.5-7b_grpo.sh.
exec bash "$(dirname "$0")/run.sh" grpo_lambda "$@"
