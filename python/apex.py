"""Ape-X on Ray: actor processes, a replay server and a learner.

The program is tfdqn_trainer/commands/apex.py (installed as the command `tfdqn-apex`); this
file runs it from a checkout: `python python/apex.py --help`.
"""

import sys

from tfdqn_trainer.commands.apex import main

if __name__ == "__main__":
    sys.exit(main())
