"""``python -m verl_lambda.patches.openrlhf``: OpenRLHF's trainer with GRPO-λ (see :mod:`.launcher`)."""

from verl_lambda.patches.openrlhf.launcher import main

if __name__ == "__main__":
    raise SystemExit(main())
