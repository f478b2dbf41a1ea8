"""``python -m verl_lambda.smoke [options] -- COMMAND``: the same as ``verl-lambda smoke``."""

import sys

from verl_lambda.smoke.cli import main

if __name__ == "__main__":
    sys.exit(main())
