"""Play a trained run's network and print its mean score.

The program is tfdqn_trainer/commands/evaluate.py (installed as the command `tfdqn-
evaluate`); this file runs it from a checkout: `python python/evaluate.py --help`.
"""

import sys

from tfdqn_trainer.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
