"""The DQN 3.0 trainer driven by python/train.py: small pieces, each testable on its own.

    config       the settings (one dataclass), presets, flag parsing and validation
    envs         ALE preprocessing as DQN 3.0 saw the game, MinAtar, and a pool of N envs
    networks     the Nature convnet, MinAtar's network and an MLP (Torch7 initialization)
    agent        epsilon schedule, update/target-copy timing, action selection, the update
    evaluation   DQN 3.0's evaluation: epsilon 0.05, full games
    trainer      the loop's parts: acting, learning, evaluation, the trainer state
    build        environment pools, the network and the agent from a Config
    checkpoint   atomic checkpoints and the best network (data only, no pickle)
    plain_state  JSON with arrays and bytes; environment state as plain attributes
    logger       console progress line, TensorBoard summaries, metrics.jsonl
    quiet_tf     imports TensorFlow without its CUDA messages on a machine without a GPU

`config`, `envs`, `checkpoint`, `plain_state` and `quiet_tf` do not import TensorFlow
(checkpoint imports it inside the functions that read or write networks), so train.py
reports bad flags before the slow import; the others do.
"""
