"""The DQN 3.0 trainer driven by python/train.py: small pieces, each testable on its own.

    config      the settings (one dataclass), presets, flag parsing and validation
    envs        ALE preprocessing as DQN 3.0 saw the game, and a pool of N environments
    networks    the Nature convnet and an MLP, with Torch7's default initialization
    agent       epsilon schedule, update/target-copy timing, action selection, the update
    evaluation  DQN 3.0's evaluation: epsilon 0.05, full games
    checkpoint  atomic checkpoints and the best network
    logger      console progress line, TensorBoard summaries, metrics.jsonl

Only `agent`, `networks` and `checkpoint` import TensorFlow, so bad flags are reported
before the slow import.
"""
