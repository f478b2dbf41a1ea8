#!/usr/bin/env bash
# Training and evaluation sets in verl's parquet format, written to $DATA_DIR (the recipes' default):
#   training:   gsm8k, math (MATH, 7.5k), deepscaler (DeepScaleR-Preview, 40k)
#   evaluation: aime24, math500, olympiadbench, minerva_math, amc23
# Also selectable through DATASETS: numina (NuminaMath-CoT) and the GRPO-λ authors' training sets
#   gsm8k, math12k (hiyouga/math12k), math_rl_16k (riddickz/math-rl-16k), orz_57k (Open-Reasoner-Zero 57k).
# `python -m verl_lambda.math.data --list` shows every set with its hub source and answer column.
#
#   bash recipes/prepare_data.sh                          # from the Hugging Face hub
#   INPUT_DIR=./raw bash recipes/prepare_data.sh          # from local copies ./raw/<name>.{parquet,jsonl,json,csv}
#   DATASETS="math gsm8k numina" bash recipes/prepare_data.sh
#   DATASETS="gsm8k math12k math_rl_16k orz_57k" bash recipes/prepare_data.sh   # the authors' training sets
#   bash recipes/prepare_data.sh --limit 100              # extra arguments go to python -m verl_lambda.math.data
set -euo pipefail

DATA_DIR=${DATA_DIR:-$HOME/data/grpo_lambda}
DATASETS=${DATASETS:-"gsm8k math deepscaler aime24 math500 olympiadbench minerva_math amc23"}
INPUT_DIR=${INPUT_DIR:-}

# shellcheck disable=SC2086  # DATASETS is a list of names
python3 -m verl_lambda.math.data $DATASETS --out-dir "$DATA_DIR" ${INPUT_DIR:+--input-dir "$INPUT_DIR"} "$@"
