"""``python -m verl_lambda.openrlhf``: OpenRLHF's trainer with GRPO-λ (:mod:`verl_lambda.patches.openrlhf.launcher`)."""

from verl_lambda.patches.openrlhf.launcher import main

if __name__ == "__main__":
    raise SystemExit(main())
