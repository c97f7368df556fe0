"""tfdqn_trainer: the DQN trainer (tfdqn-train, tfdqn-apex, ...): small pieces, each testable
on its own.

    config        the settings (one dataclass, Ape-X's included), presets, flags, validation
    envs          ALE as DQN 3.0 (or Dopamine) served it, MinAtar, and a pool of N envs
    networks      the Nature convnet, MinAtar's network and an MLP (Torch7 or Glorot init)
    agent         epsilon schedule, update/target-copy timing, action selection, the
                  online and target networks and their compiled updates
    optimizers    DQN 3.0's, Dopamine's (TF1) and MinAtar's (PyTorch) centered RMSprop, Adam,
                  dynamic loss scaling
    evaluation    DQN 3.0's evaluation: epsilon 0.05, full games
    trainer       the loop's parts: acting, learning (plain and weighted updates), evaluation
                  and the best network, the trainer state, checkpoints of a run
    build         environment pools, the network and the agent from a Config
    checkpoint    atomic checkpoints and the best network (data only, no pickle)
    plain_state   JSON with arrays and bytes; environment state as plain attributes
    logger        console progress line, TensorBoard summaries, metrics.jsonl
    quiet_tf      imports TensorFlow without its CUDA messages on a machine without a GPU
    stop_request  SIGINT/SIGTERM as a flag the loops poll
    distributed   Ape-X's Ray actors: actor workers, the replay and parameter servers, the
                  evaluator
    commands/     the programs: train, evaluate, apex, plot, export, convert_checkpoint

`config`, `envs`, `checkpoint`, `plain_state` and `quiet_tf` do not import TensorFlow
(checkpoint imports it inside the functions that read or write networks), so the programs
report bad flags before the slow import; the others do.
"""
