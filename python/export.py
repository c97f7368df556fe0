"""Export a run's trained policy as a TensorFlow SavedModel that needs no tfdqn_ops.

The program is tfdqn_trainer/commands/export.py (installed as the command `tfdqn-export`); this
file runs it from a checkout: `python python/export.py --help`.
"""

import sys

from tfdqn_trainer.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
