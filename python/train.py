"""Train DQN (DQN 3.0's settings by default; --help lists every flag).

The program is tfdqn_trainer/commands/train.py (installed as the command `tfdqn-train`);
this file runs it from a checkout: `python python/train.py --help`.
"""

import sys

from tfdqn_trainer.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
