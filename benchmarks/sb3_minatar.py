"""Stable-Baselines3's DQN with the MinAtar paper's settings: an independent implementation to
compare train.py --preset minatar with, for speed (bench_minatar.py imports `make_dqn`) and
for learning (this script's main: a full run whose curve plot.py reads like one of ours).

    python benchmarks/sb3_minatar.py --game Breakout --seed 1 --frames 1000000 --run-dir DIR
    python python/plot.py DIR --csv-dir docs/results/minatar-sb3     # the curve data

The settings are examples/dqn.py's (kenjyoung/MinAtar), as in --preset minatar: Conv 16 3x3
stride 1 -> ReLU -> Dense 128 -> ReLU -> linear output on the 0/1 planes; replay 100,000;
batch 32; one update per frame from frame 5,000; target copy every 1,000 updates; epsilon 1
for the first 5,000 frames, then linear to 0.1 over 100,000 frames; centered RMSprop (lr
2.5e-4, alpha 0.95, eps 0.01 added after the sqrt, PyTorch's); discount 0.99; the mean
Huber loss (SB3's smooth_l1_loss); sticky actions 0.1 and difficulty ramping as the
environments' defaults. SB3's own defaults changed to match: its epsilon schedule starts
decaying at frame 0 (replaced by the paper's), and it clips the gradient norm at 10 (set so
large that it never clips). What stays SB3's: greedy ties go to the first maximum, as in
dqn.py; minibatches are drawn with replacement, as in train.py.

The run directory gets config.json and metrics.jsonl in train.py's format (one "game"
record per finished training game with the frame count, its return and the mean of the last
100), so python/plot.py plots it and writes its curve file. The run cannot be resumed: a
stopped run keeps the games it finished.
"""

import argparse
import json
import os
import sys
import time
import warnings

from _machine import keep_tensorflow_out  # noqa: E402

GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
LEARN_START = 5_000          # dqn.py's REPLAY_START_SIZE
EPSILON_FRAMES = 100_000     # dqn.py's FIRST_N_FRAMES
END_EPSILON = 0.1


def paper_epsilon(frames: int, learn_start: int = LEARN_START,
                  decay_frames: int = EPSILON_FRAMES) -> float:
    """dqn.py's schedule: 1 before learning starts, then linear to 0.1 over decay_frames."""
    if frames < learn_start:
        return 1.0
    return max(END_EPSILON, 1.0 - (1.0 - END_EPSILON) * (frames - learn_start) / decay_frames)


def make_dqn(game: str, seed: int, threads: int, total_frames: int,
             learn_start: int = LEARN_START, decay_frames: int = EPSILON_FRAMES):
    """SB3's DQN on MinAtar/<game>-v0 with the paper's settings (see the module docstring);
    epsilon follows paper_epsilon(frames, learn_start, decay_frames)."""
    keep_tensorflow_out()
    import gymnasium as gym
    import minatar.gym
    import numpy as np
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from torch import nn

    if game not in GAMES:
        raise ValueError(f"game must be one of {', '.join(GAMES)}; got {game!r}")
    torch.set_num_threads(threads)
    if f"MinAtar/{game}-v0" not in gym.registry:  # gymnasium 1.x does not register them
        minatar.gym.register_envs()

    class Uint8Planes(gym.ObservationWrapper):
        """MinAtar's bool planes as uint8 0/1 (SB3's buffers take no bool)."""

        def __init__(self, env):
            super().__init__(env)
            self.observation_space = gym.spaces.Box(0, 1, env.observation_space.shape,
                                                    np.uint8)

        def observation(self, obs):
            return obs.astype(np.uint8)

    class MinAtarNet(BaseFeaturesExtractor):
        """examples/dqn.py's QNetwork up to its 128-unit hidden layer (SB3 adds the
        linear output: net_arch=[])."""

        def __init__(self, space):
            super().__init__(space, features_dim=128)
            self.net = nn.Sequential(nn.Conv2d(space.shape[2], 16, 3, 1), nn.ReLU(),
                                     nn.Flatten(), nn.Linear(8 * 8 * 16, 128), nn.ReLU())

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2))  # channels-last planes -> NCHW

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "-v0 is out of date"
        env = Uint8Planes(gym.make(f"MinAtar/{game}-v0"))
    model = DQN("CnnPolicy", env, learning_rate=2.5e-4, buffer_size=100_000,
                learning_starts=learn_start, batch_size=32, gamma=0.99, train_freq=1,
                gradient_steps=1, target_update_interval=1_000,
                exploration_initial_eps=1.0, exploration_final_eps=END_EPSILON,
                max_grad_norm=1e10,
                policy_kwargs=dict(features_extractor_class=MinAtarNet, net_arch=[],
                                   normalize_images=False, optimizer_class=torch.optim.RMSprop,
                                   optimizer_kwargs=dict(alpha=0.95, eps=0.01, centered=True)),
                seed=seed, verbose=0, device="cpu")
    # SB3 calls exploration_schedule(progress_remaining), progress_remaining = 1 - frames /
    # total_frames; its linear schedule would start decaying at frame 0, the paper's at 5,000.
    model.exploration_schedule = lambda remaining: paper_epsilon(
        round((1.0 - remaining) * total_frames), learn_start, decay_frames)
    return model


def learn(args) -> int:
    keep_tensorflow_out()
    from stable_baselines3.common.callbacks import BaseCallback

    os.makedirs(args.run_dir, exist_ok=True)
    metrics_path = os.path.join(args.run_dir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        print(f"sb3_minatar.py: --run-dir {args.run_dir!r} already holds a run "
              "(metrics.jsonl); give a new directory", file=sys.stderr)
        return 2
    import stable_baselines3
    import torch
    config = {"env": f"MinAtar/{args.game}-v0", "seed": args.seed, "preset": "sb3-minatar",
              "trainer": f"stable-baselines3 {stable_baselines3.__version__} DQN, torch "
                         f"{torch.__version__}", "frames": args.frames,
              "torch_threads": args.threads}
    with open(os.path.join(args.run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    model = make_dqn(args.game, args.seed, args.threads, args.frames)

    class GameLog(BaseCallback):
        """One metrics.jsonl record per finished game (SB3's Monitor puts the game's return
        in info["episode"]), and a progress record every --prog-freq frames."""

        def _on_training_start(self):
            self.file = open(metrics_path, "a")
            self.returns = []
            self.clock = time.perf_counter()

        def _write(self, record):
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

        def _on_step(self):
            frames = self.num_timesteps
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns = (self.returns + [float(info["episode"]["r"])])[-100:]
                    self._write({"type": "game", "step": frames, "score": self.returns[-1],
                                 "mean_return_100": sum(self.returns) / len(self.returns)})
            if frames % args.prog_freq == 0:
                now = time.perf_counter()
                self._write({"type": "train", "step": frames,
                             "sps": args.prog_freq / (now - self.clock),
                             "epsilon": model.exploration_rate})
                self.clock = now
            return True

        def _on_training_end(self):
            self.file.close()

    model.learn(total_timesteps=args.frames, callback=GameLog())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Breakout", choices=GAMES)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--prog-freq", type=int, default=10_000)
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    for name in ("frames", "threads", "prog_freq"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got "
                         f"{getattr(args, name)}")
    return learn(args)


if __name__ == "__main__":
    sys.exit(main())
