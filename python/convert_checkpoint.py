"""Convert a checkpoint of an earlier version (pickle) to today's format, once.

The program is tfdqn_trainer/commands/convert_checkpoint.py; this file runs it from a
checkout: `python python/convert_checkpoint.py --help`.
"""

import sys

from tfdqn_trainer.commands.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
