"""Learning curves, their data and tables from runs and curve files.

The program is tfdqn_trainer/commands/plot.py (installed as the command `tfdqn-plot`); this
file runs it from a checkout: `python python/plot.py --help`.
"""

import sys

from tfdqn_trainer.commands.plot import main

if __name__ == "__main__":
    sys.exit(main())
