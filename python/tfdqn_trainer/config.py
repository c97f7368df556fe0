"""Every setting of a run, with its default, in one dataclass; presets; flags; validation.

Defaults are DQN 3.0's (deepmind/dqn `run_gpu` and `NeuralQLearner.lua`), all counted in agent
steps (one agent step = one action of one environment = `actrep` emulator frames). Flag names
are DQN 3.0's option names in kebab case (`learn_start` -> `--learn-start`).

A preset replaces some defaults; a flag given on the command line always wins over the preset.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple


# --precision's choices (networks.dtype_policy turns one into a Keras dtype policy).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the flag and the value received."""


def _opt(default, help_text, parse=None, choices=None):
    return field(default=default, metadata={"help": help_text, "parse": parse, "choices": choices})


def _parse_ints(text):
    try:
        return tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


@dataclass
class Config:
    # --- environment -------------------------------------------------------------------
    env: str = _opt("ALE/Pong-v5", "gymnasium id: ALE/<Game>-v5, MinAtar/<Game>-v0 (with "
                    "--preset minatar), or an env with a 1-D Box observation and Discrete "
                    "actions (e.g. CartPole-v1 with --preset classic)")
    preset: str = _opt("atari", "atari: DQN 3.0's settings; dopamine: Dopamine's DQN "
                       "(dqn.gin) as its published Atari baselines ran; minatar: the MinAtar "
                       "paper's DQN (MinAtar/Breakout-v0 ...); classic: small settings for "
                       "vector-observation envs like CartPole (explicit flags still win)",
                       choices=("atari", "dopamine", "minatar", "classic"))
    num_envs: int = _opt(1, "environments stepped together; each step of each is one agent "
                         "step, and updates per agent step stay the same")
    actrep: int = _opt(4, "emulator frames per agent step, rewards summed, the observation "
                       "is the max of the last 2 frames (Atari only)")
    random_starts: int = _opt(30, "1..N no-op frames after each new game and each lost life "
                              "(Atari only; 0: none)")
    sticky_actions: float = _opt(0.0, "probability that the emulator repeats the previous "
                                 "action instead of the new one, at every emulator frame "
                                 "(ALE's repeat_action_probability; Atari only)")
    life_loss_terminal: bool = _opt(True, "in training a lost life is a terminal for learning "
                                    "(the game goes on; Atari only)")
    preprocess: str = _opt("dqn3", "how two emulator frames become one 84x84 observation "
                           "(Atari only). dqn3: max of the RGB frames, luminance, Torch7's "
                           "area shrink; dopamine: ALE's grayscale of each frame, max, "
                           "OpenCV's area resize of the uint8 frame",
                           choices=("dqn3", "dopamine"))
    hist_len: int = _opt(4, "frames (observations) stacked into the network's input")
    count_terminal_steps: bool = _opt(True, "the step that observes a terminal state and "
                                      "resets the env counts as an agent step (DQN 3.0); "
                                      "without it only actions taken count (MinAtar's frames)")
    reward_clip: float = _opt(1.0, "rewards for learning are clipped to [-x, x] (0: no clip); "
                              "reported scores are never clipped")
    # --- schedule (agent steps) ---------------------------------------------------------
    steps: int = _opt(50_000_000, "agent steps to train for")
    learn_start: int = _opt(50_000, "agent steps of acting at --ep-start before learning")
    replay_memory: int = _opt(1_000_000, "replay capacity in transitions (all envs together)")
    update_freq: int = _opt(4, "one learning call every this many agent steps")
    n_replay: int = _opt(1, "minibatch updates per learning call")
    target_q: int = _opt(10_000, "copy the network to the target network when "
                         "step % target_q == 1")
    ep_start: float = _opt(1.0, "epsilon until --learn-start (DQN 3.0's ep)")
    ep_end: float = _opt(0.1, "final epsilon")
    ep_endt: int = _opt(1_000_000, "agent steps after --learn-start to anneal epsilon over")
    # --- the update ---------------------------------------------------------------------
    minibatch_size: int = _opt(32, "transitions per update")
    lr: float = _opt(2.5e-4, "learning rate of centered RMSprop (rho 0.95, epsilon 0.01 inside "
                     "the sqrt, no momentum) on the summed loss")
    optimizer: str = _opt("rmsprop", "rmsprop: DQN 3.0's centered RMSprop (epsilon inside "
                          "the sqrt); rmsprop-tf1: TF1's tf.train.RMSPropOptimizer(centered="
                          "True) as Dopamine builds it (epsilon inside the sqrt, mean square "
                          "starting at 1); rmsprop-torch: PyTorch's centered RMSprop (epsilon "
                          "added after the sqrt, as MinAtar's dqn.py); adam: Adam (Keras "
                          "defaults but --lr), steadier on small tasks",
                          choices=("rmsprop", "rmsprop-tf1", "rmsprop-torch", "adam"))
    rms_epsilon: float = _opt(0.01, "epsilon of the RMSprop optimizers (not adam)")
    loss_reduction: str = _opt("sum", "sum: the batch's summed loss (DQN 3.0's dw); mean: "
                               "its mean (PyTorch's smooth_l1_loss, MinAtar's dqn.py)",
                               choices=("sum", "mean"))
    discount: float = _opt(0.99, "discount factor gamma")
    clip_delta: float = _opt(1.0, "TD errors clipped to [-x, x] in the gradient (Huber loss); "
                             "0: no clip")
    double_dqn: bool = _opt(False, "double DQN: the online network picks the next action")
    n_step: int = _opt(1, "n-step returns: sum_{k<n} discount^k r_{t+k}, bootstrapped with "
                       "discount^n from the state n steps later (stopped at a terminal); 1: "
                       "DQN 3.0's one-step target")
    prioritized: bool = _opt(False, "prioritized replay (always on under Ape-X; Schaul et al. "
                             "2016, proportional): "
                             "transitions drawn with probability p^alpha / sum p^alpha, p = "
                             "|TD error| + --priority-epsilon, updates weighted by importance "
                             "weights with beta annealed from --importance-exponent to 1")
    priority_exponent: float = _opt(0.6, "alpha of --prioritized")
    importance_exponent: float = _opt(0.4, "beta of --prioritized at the start; it rises "
                                      "linearly to 1 at --steps (a --resume that extends "
                                      "--steps stretches the rest of the rise)")
    priority_epsilon: float = _opt(1e-6, "added to |TD error| for the new priorities "
                                   "(--prioritized), so that no transition gets priority 0")
    importance_normalization: str = _opt(
        "batch", "how --prioritized scales its importance weights (N P(i))^-beta: batch: "
        "divided by the minibatch's largest (DQN Zoo, Dopamine); memory: by the largest any "
        "stored transition could get (Schaul et al.'s max_j w_j over the memory, OpenAI "
        "Baselines), which shrinks every weight, and so the step size, as the smallest "
        "priority in the memory approaches --priority-epsilon", choices=("batch", "memory"))
    precision: str = _opt("float32", "float32 (DQN 3.0); mixed_bfloat16: the networks compute "
                          "in bfloat16 (CPUs with AMX / AVX-512 BF16, GPUs with tensor cores); "
                          "mixed_float16: float16 with dynamic loss scaling (GPUs). Weights, "
                          "optimizer state and checkpoints stay float32",
                          choices=PRECISIONS)
    network: str = _opt("auto", "auto: nature for Atari, minatar for MinAtar, mlp for vector "
                        "observations", choices=("auto", "nature", "minatar", "mlp"))
    init: str = _opt("torch7", "initial weights. torch7: U(+-1/sqrt(fan_in)) for weights and "
                     "biases (DQN 3.0's Torch7 layers); glorot: Glorot-uniform weights, zero "
                     "biases (Dopamine: slim's and Keras' defaults)",
                     choices=("torch7", "glorot"))
    conv_padding: str = _opt("valid", "padding of the convolutions. valid: DQN 3.0's (the "
                             "Nature network flattens 7x7x64); same: TensorFlow's SAME, "
                             "Dopamine's slim.conv2d default (11x11x64)",
                             choices=("valid", "same"))
    mlp_hidden: Tuple[int, ...] = _opt((256, 256), "hidden layer sizes of the MLP, e.g. 64,64",
                                       parse=_parse_ints)
    # --- evaluation ---------------------------------------------------------------------
    eval_freq: int = _opt(250_000, "evaluate every this many agent steps after learning "
                          "starts (0: never)")
    eval_steps: int = _opt(125_000, "agent steps per evaluation (full games; unfinished "
                           "games do not count)")
    eval_ep: float = _opt(0.05, "epsilon during evaluation")
    eval_envs: int = _opt(1, "environments played together in an evaluation, sharing its "
                          "--eval-steps")
    stop_score: Optional[float] = _opt(None, "stop when an evaluation's mean score reaches "
                                       "this (default: never)", parse=float)
    # --- outputs ------------------------------------------------------------------------
    run_dir: Optional[str] = _opt(None, "where summaries, metrics.jsonl, config.json and "
                                  "checkpoints go (default: runs/<env>-s<seed>-<time>)",
                                  parse=str)
    save_freq: int = _opt(125_000, "checkpoint every this many agent steps (0: only at the "
                          "end and on SIGINT/SIGTERM)")
    prog_freq: int = _opt(10_000, "TensorBoard training summaries every this many agent steps")
    resume: Optional[str] = _opt(None, "continue the run in this directory from its latest "
                                 "checkpoint (its config.json is used; flags like --steps "
                                 "may extend it)", parse=str)
    # --- misc ---------------------------------------------------------------------------
    seed: int = _opt(1, "seed of networks, exploration, environments and replay sampling")
    jit_compile: bool = _opt(False, "compile the update with XLA (exit code 2 if XLA cannot "
                             "compile it; on CPU XLA's convolution gradients are ~10x slower)")
    jit_act: bool = _opt(True, "compile the acting forward pass with XLA (~0.5 ms less per "
                         "call on CPU)")
    tf_threads: int = _opt(0, "TensorFlow intra-op threads (0: TensorFlow's default)")
    # --- Ape-X (tfdqn-apex / python/apex.py only; train.py refuses them) -----------------
    actors: int = _opt(2, "Ape-X: actor processes, each with --num-envs environments")
    ray_address: Optional[str] = _opt(None, "Ape-X: join this Ray cluster ('auto' or "
                                      "HOST:PORT) (default: start Ray on this machine)",
                                      parse=str)
    send_every: int = _opt(50, "Ape-X: agent steps an actor collects before sending them")
    max_in_flight: int = _opt(4, "Ape-X: sends an actor may have outstanding")
    weights_every: int = _opt(50, "Ape-X: learner updates between weight publications")
    weights_poll: int = _opt(400, "Ape-X: agent steps between an actor's weight fetches")
    sample_batches: int = _opt(16, "Ape-X: minibatches the learner asks the replay for in one "
                               "call, and updates whose priorities go back in one call")
    replay_shards: int = _opt(1, "Ape-X: replay servers the replay is split into (actor i "
                              "feeds shard i % K; each holds its actors' share of "
                              "--replay-memory); draws are exactly those of one memory")
    replay_anywhere: bool = _opt(False, "Ape-X: let Ray place the replay shards on any node "
                                 "(default: on the learner's node, which pulls every "
                                 "minibatch from them)")
    max_steps_per_update: Optional[float] = _opt(
        None, "Ape-X rate limit: once learning starts, the actors together run at most this "
        "many agent steps per learner update; 0: no limit, as in the Ape-X paper (default: "
        "the trainer's own ratio, --update-freq / --n-replay, as Reverb's sample-to-insert "
        "limiters keep one)", parse=float)


# Settings for small vector-observation tasks, close to RL Zoo's tuned CartPole-v1 DQN (Adam,
# 256x256, about 0.5 updates per step, a target copy every ~128 updates). DQN 3.0's centered
# RMSprop can diverge here (see optimizers.make_optimizer).
#
# MinAtar: the DQN of Young & Tian 2019 ("MinAtar: An Atari-Inspired Testbed for Thorough and
# Reproducible Reinforcement Learning Experiments"), as its repository's examples/dqn.py
# (kenjyoung/MinAtar) runs it, line by line:
#   BATCH_SIZE 32, REPLAY_BUFFER_SIZE 100,000, TARGET_NETWORK_UPDATE_FREQ 1,000 (updates; one
#   update per frame, so frames), TRAINING_FREQ 1, REPLAY_START_SIZE 5,000 (learning while
#   t > 5000), EPSILON 1.0 -> END_EPSILON 0.1 linearly over FIRST_N_FRAMES 100,000 after
#   the replay start, STEP_SIZE 2.5e-4, SQUARED_GRAD_MOMENTUM 0.95 (torch RMSprop alpha,
#   centered=True), MIN_SQUARED_GRAD 0.01 (torch's eps, added after the sqrt), GAMMA 0.99,
#   f.smooth_l1_loss (Huber with threshold 1, MEAN over the batch), rewards unclipped, t
#   counting env.act calls only, one observation per state (no frame stack), the network
#   in networks.minatar_network. RMSprop has no momentum: GRAD_MOMENTUM 0.95 is the centered
#   average's decay, as in DQN 3.0 (the maintainer's answer in kenjyoung/MinAtar PR #37, which
#   proposed passing it as momentum=0.95; the paper's 2019 curves had none). Sticky actions 0.1 and
#   difficulty ramping are the environments' defaults. No evaluation phase in the paper:
#   its curves are training returns, so evaluations here are sparse.
#
# Dopamine: the DQN of Dopamine's published Atari baselines (google/dopamine,
# baselines/atari/data/<game>.json), as its 2018 code ran them:
#   dopamine/agents/dqn/configs/dqn.gin: gamma 0.99, update_horizon 1, min_replay_history
#     20,000 agent steps (learning while more transitions than that are stored),
#     update_period 4, target_update_period 8,000, epsilon_train 0.01, epsilon_eval 0.001,
#     epsilon_decay_period 250,000; tf.train.RMSPropOptimizer(learning_rate 0.00025, decay
#     0.95, momentum 0, epsilon 1e-5, centered True); sticky actions; training_steps
#     250,000 and evaluation_steps 125,000 per iteration; max_steps_per_episode 27,000;
#     replay_capacity 1,000,000, batch_size 32.
#   dopamine/agents/dqn/dqn_agent.py: linearly_decaying_epsilon (1 until the warm-up, then
#     linear over the decay period to epsilon_train: --ep-start 1, --learn-start, --ep-endt,
#     --ep-end), Huber loss (tf.losses.huber_loss, delta 1) on r + gamma max_a Q_target(s', a)
#     (1 - terminal), minimized as its tf.reduce_mean over the batch.
#   dopamine/discrete_domains/atari_lib.py: create_atari_environment makes
#     <Game>NoFrameskip-v0 (repeat_action_probability 0.25 in the emulator, minimal action
#     set) with no no-op starts; AtariPreprocessing: frame_skip 4 with rewards summed,
#     terminal_on_life_loss False, grayscale (ale.getScreenGrayscale) of the last two frames,
#     their max, cv2.resize(INTER_AREA) to 84x84; nature_dqn_network: slim.conv2d /
#     fully_connected with slim's defaults (padding SAME, xavier_initializer = Glorot
#     uniform, zero biases).
#   dopamine/atari/run_experiment.py: rewards clipped to [-1, 1] for learning; an episode
#     stops at 27,000 agent steps (here ALE/<Game>-v5's own cap of 108,000 frames, the same
#     at frame skip 4); an agent step is one env.step (--no-count-terminal-steps).
PRESETS: Dict[str, Dict[str, object]] = {
    "atari": {},
    "dopamine": dict(
        sticky_actions=0.25, random_starts=0, life_loss_terminal=False, preprocess="dopamine",
        actrep=4, hist_len=4, count_terminal_steps=False, reward_clip=1.0,
        replay_memory=1_000_000, learn_start=20_000, update_freq=4, n_replay=1,
        target_q=8_000, ep_start=1.0, ep_end=0.01, ep_endt=250_000,
        minibatch_size=32, optimizer="rmsprop-tf1", rms_epsilon=1e-5, lr=2.5e-4,
        loss_reduction="mean", discount=0.99, clip_delta=1.0,
        network="nature", init="glorot", conv_padding="same",
        eval_freq=250_000, eval_steps=125_000, eval_ep=0.001,
    ),
    "minatar": dict(
        env="MinAtar/Breakout-v0", actrep=1, random_starts=0, hist_len=1,
        count_terminal_steps=False, reward_clip=0.0,
        steps=5_000_000, learn_start=5_000, replay_memory=100_000, update_freq=1, n_replay=1,
        target_q=1_000, ep_start=1.0, ep_end=0.1, ep_endt=100_000,
        minibatch_size=32, optimizer="rmsprop-torch", loss_reduction="mean", lr=2.5e-4,
        discount=0.99, clip_delta=1.0, network="minatar",
        eval_freq=250_000, eval_steps=25_000, save_freq=250_000, prog_freq=10_000,
        tf_threads=1,  # speed only: this small network runs faster on one thread (README)
    ),
    "classic": dict(
        env="CartPole-v1", num_envs=8, actrep=1, random_starts=0, hist_len=1,
        steps=50_000, learn_start=1_000, replay_memory=50_000, update_freq=4, n_replay=2,
        target_q=256, ep_end=0.04, ep_endt=8_000,
        minibatch_size=64, optimizer="adam", lr=1e-3, mlp_hidden=(256, 256),
        eval_freq=2_500, eval_steps=5_000, eval_envs=8, save_freq=10_000, prog_freq=1_000,
    ),
}

# What may differ from the run's config.json on --resume (nothing that shapes the state).
RESUMABLE_OVERRIDES = ("steps", "eval_freq", "eval_steps", "eval_ep", "eval_envs",
                       "stop_score", "save_freq", "prog_freq", "jit_compile", "jit_act",
                       "tf_threads", "precision", "ray_address", "send_every",
                       "max_in_flight", "weights_every", "weights_poll",
                       "max_steps_per_update", "sample_batches", "replay_anywhere")

# Settings of Ape-X alone (tfdqn-apex); train.py refuses them.
APEX_ONLY = ("actors", "ray_address", "send_every", "max_in_flight", "weights_every",
             "weights_poll", "max_steps_per_update", "sample_batches", "replay_shards",
             "replay_anywhere")
# Settings Ape-X replaces by its own rule (each actor explores at a fixed epsilon).
NOT_UNDER_APEX = {name: "each Ape-X actor explores at its own fixed epsilon, "
                  "0.4^(1 + 7 i / (N - 1))" for name in ("ep_start", "ep_end", "ep_endt")}

FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def steps_per_update_limit(cfg: Config) -> float:
    """Ape-X's rate limit in agent steps per learner update (0: none): --max-steps-per-update,
    or train.py's own ratio, --update-freq agent steps per --n-replay updates."""
    if cfg.max_steps_per_update is not None:
        return float(cfg.max_steps_per_update)
    return cfg.update_freq / cfg.n_replay


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def program_name(script: str) -> str:
    """What a program calls itself in usage and errors: the console script it was started
    as (tfdqn-train, ...), else its script's name (train.py, ...)."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("tfdqn-") else script


def build_parser(prog: Optional[str] = None,
                 description: Optional[str] = None) -> argparse.ArgumentParser:
    """Flags generated from `Config`; only flags given on the command line end up set."""
    parser = argparse.ArgumentParser(
        prog=prog or program_name("train.py"), argument_default=argparse.SUPPRESS,
        description=description or "Train DQN as DeepMind's DQN 3.0 did (defaults), on "
                    "gymnasium + ale-py, with the tfdqn_ops target op and replay memory.")
    for f in dataclasses.fields(Config):
        meta = f.metadata
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        help_text = meta["help"]
        if "default:" not in help_text:  # Optional settings explain their None themselves
            help_text += f" (default: {shown}"
            for name in ("dopamine", "minatar", "classic"):
                if f.name in PRESETS[name]:
                    value = PRESETS[name][f.name]
                    help_text += f"; {name}: " + (",".join(map(str, value))
                                                  if isinstance(value, tuple) else str(value))
            help_text += ")"
        kwargs = dict(help=help_text.replace("%", "%%"))  # argparse formats help with %
        if isinstance(f.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = meta["parse"] or type(f.default)
            kwargs["metavar"] = f.name.upper()
            if meta["choices"]:
                kwargs["choices"] = meta["choices"]
        parser.add_argument(flag(f.name), **kwargs)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None,
               description: Optional[str] = None) -> Tuple[Config, Dict[str, object]]:
    """Command line -> (Config with preset and flags applied, the flags given explicitly)."""
    explicit = vars(build_parser(prog, description).parse_args(argv))
    preset = explicit.get("preset", Config.preset)
    cfg = dataclasses.replace(Config(), **PRESETS[preset])
    cfg = dataclasses.replace(cfg, **explicit)
    return cfg, explicit


def validate(cfg: Config, distributed: bool = False) -> None:
    """Raise ConfigError for the first setting that cannot work (env ids are checked later).
    distributed: the settings of an Ape-X run (its replay has actors x num_envs streams)."""

    def need(ok, name, what):
        if not ok:
            raise ConfigError(f"{flag(name)} {what}, got {getattr(cfg, name)!r}")

    def finite(name):
        need(math.isfinite(getattr(cfg, name)), name, "must be a finite number")

    for name in ("ep_start", "ep_end", "eval_ep"):
        finite(name)
        need(0.0 <= getattr(cfg, name) <= 1.0, name, "is an epsilon and must be in [0, 1]")
    for name in ("steps", "num_envs", "eval_envs", "actrep", "hist_len", "update_freq", "n_replay",
                 "target_q", "minibatch_size", "prog_freq"):
        need(getattr(cfg, name) >= 1, name, "must be a positive integer")
    for name in ("learn_start", "ep_endt", "random_starts", "eval_freq", "eval_steps",
                 "save_freq", "tf_threads"):
        need(getattr(cfg, name) >= 0, name, "must be >= 0")
    for name in ("lr", "discount", "clip_delta", "reward_clip"):
        finite(name)
    need(cfg.lr > 0, "lr", "must be > 0")
    finite("rms_epsilon")
    need(cfg.rms_epsilon > 0, "rms_epsilon", "must be > 0")
    finite("sticky_actions")
    need(0.0 <= cfg.sticky_actions <= 1.0, "sticky_actions", "is a probability and must be "
         "in [0, 1]")
    need(0.0 <= cfg.discount <= 1.0, "discount", "must be in [0, 1]")
    need(cfg.clip_delta >= 0, "clip_delta", "must be >= 0 (0: no clip)")
    need(cfg.reward_clip >= 0, "reward_clip", "must be >= 0 (0: no clip)")
    need(1 <= cfg.n_step <= 1000, "n_step", "must be an integer in [1, 1000]")
    for name in ("priority_exponent", "importance_exponent", "priority_epsilon"):
        finite(name)
    need(cfg.priority_exponent > 0, "priority_exponent", "must be > 0")
    need(0.0 <= cfg.importance_exponent <= 1.0, "importance_exponent", "must be in [0, 1]")
    need(cfg.priority_epsilon > 0, "priority_epsilon", "must be > 0")
    need(len(cfg.mlp_hidden) > 0 and all(h >= 1 for h in cfg.mlp_hidden), "mlp_hidden",
         "must be one or more positive integers")
    if cfg.replay_memory < cfg.minibatch_size:
        raise ConfigError(f"--replay-memory {cfg.replay_memory} is smaller than "
                          f"--minibatch-size {cfg.minibatch_size}")
    if distributed:
        for name in ("actors", "send_every", "max_in_flight", "weights_every", "weights_poll",
                     "sample_batches", "replay_shards"):
            need(getattr(cfg, name) >= 1, name, "must be a positive integer")
        need(cfg.replay_shards <= cfg.actors, "replay_shards",
             f"must be at most --actors ({cfg.actors}): each shard is fed by its own actors")
        if cfg.max_steps_per_update is not None:
            finite("max_steps_per_update")
            need(cfg.max_steps_per_update >= 0, "max_steps_per_update", "must be >= 0")
    streams = cfg.num_envs * (cfg.actors if distributed else 1)
    per_stream = cfg.replay_memory // streams
    if per_stream < cfg.hist_len + cfg.n_step:
        envs = (f"--actors {cfg.actors} x --num-envs {cfg.num_envs} = {streams} streams"
                if distributed else f"--num-envs {cfg.num_envs}")
        raise ConfigError(f"--replay-memory {cfg.replay_memory} leaves {per_stream} entries per "
                          f"environment ({envs}); each needs at least "
                          f"--hist-len + --n-step = {cfg.hist_len + cfg.n_step}")
    if cfg.stop_score is not None and math.isnan(cfg.stop_score):
        raise ConfigError("--stop-score must be a number, got nan")


def config_to_json(cfg: Config) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=False) + "\n"


def config_from_dict(values: Dict[str, object]) -> Config:
    known = {k: v for k, v in values.items() if k in FIELDS}
    # Runs saved before --importance-normalization existed weighed over the memory: a
    # resumed one keeps doing so.
    known.setdefault("importance_normalization", "memory")
    if "mlp_hidden" in known:
        known["mlp_hidden"] = tuple(known["mlp_hidden"])
    return Config(**known)


def resume_config(run_dir: str, explicit: Dict[str, object]) -> Config:
    """The config of the run in `run_dir`, with the few flags that may change applied."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise ConfigError(f"--resume {run_dir!r}: no such directory")
    if not os.path.isfile(path):
        raise ConfigError(f"--resume {run_dir!r} is not a run directory (no config.json)")
    try:
        with open(path) as f:
            saved = config_from_dict(json.load(f))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--resume {run_dir!r}: config.json is unreadable ({e})")
    changed = sorted(name for name, value in explicit.items()
                     if name not in ("resume", "run_dir", "preset")
                     and name not in RESUMABLE_OVERRIDES and getattr(saved, name) != value)
    if changed:
        raise ConfigError(
            "--resume cannot change " + ", ".join(flag(n) for n in changed) + " (a resumed "
            "run keeps the settings its state was made with); only "
            + ", ".join(flag(n) for n in RESUMABLE_OVERRIDES) + " may be given")
    overrides = {n: explicit[n] for n in RESUMABLE_OVERRIDES if n in explicit}
    return dataclasses.replace(saved, resume=run_dir, run_dir=run_dir, **overrides)


def settle_run_dir(cfg: Config, prefix: str = "") -> None:
    """--run-dir's default, runs/<prefix><env>-s<seed>-<time>; a new run refuses a directory
    that already holds one (ConfigError)."""
    if cfg.run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cfg.run_dir = os.path.join("runs", f"{prefix}{cfg.env.replace('/', '-')}-s{cfg.seed}-"
                                           f"{stamp}")
    elif not cfg.resume and os.path.isfile(os.path.join(cfg.run_dir, "config.json")):
        raise ConfigError(f"--run-dir {cfg.run_dir!r} already holds a run: continue it with "
                          f"--resume {cfg.run_dir}, or choose another --run-dir")


def fail(message: str, prog: Optional[str] = None) -> "NoReturn":  # noqa: F821
    """One clear line on stderr and exit code 2 (the code argparse uses for usage errors)."""
    print(f"{prog or program_name('train.py')}: error: {message}", file=sys.stderr)
    sys.exit(2)
