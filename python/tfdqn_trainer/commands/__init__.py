"""The command-line programs, each a module with `main(argv=None) -> int`.

    train               tfdqn-train        python python/train.py
    evaluate            tfdqn-evaluate     python python/evaluate.py
    apex                tfdqn-apex         python python/apex.py
    plot                tfdqn-plot         python python/plot.py
    export              tfdqn-export       python python/export.py
    convert_checkpoint  (script only)      python python/convert_checkpoint.py

The scripts in python/ are thin entry points to these (how the README starts a run from a
checkout); the console scripts are what `pip install .` puts on the PATH.
"""
