"""Trainer throughput on Pong after learning starts, and CartPole time to solve.

    python benchmarks/bench_train.py                    # ours only (about 5 minutes)
    python benchmarks/bench_train.py --sb3              # + Stable-Baselines3 (about 10 more)
    python benchmarks/bench_train.py --sb3 --pong-only --rounds 2   # the trainer table
    python benchmarks/bench_train.py --out docs/BENCHMARKS_train.md

Pong rows: train.py in float32 with 1 and 4 environments, and with the fast settings
(FAST_FLAGS: 4 environments and mixed bfloat16); SB3 with 1 environment (torch 2 and 1
threads) and with 4 (n_envs 4, one gradient step per 4 agent steps as ours, torch 2
threads, its faster setting here). With --rounds R every configuration runs R times, the
configurations alternating within each round; the table gives the median (and each round).

Pong: `python/train.py` with DQN 3.0's default settings except a learning start of 2,000
steps, a 100,000-transition replay and epsilon reaching its final 0.1 after 1,000 more steps
(so it runs in a minute and measures the steady state of a long run, where 90% of the actions
need the network; none of these changes the cost of a step), no evaluations and no
checkpoints during the window. Agent steps
per second are measured over the windows that start 1,000 steps after learning starts (the
first update's tracing excluded), from the run's own metrics.jsonl, which also gives the
wall time per phase: action selection (epsilon-greedy with the network's forward pass),
environment step, replay add, replay sample and update, each per call.

CartPole: `python/train.py --preset classic --stop-score 475` per seed: agent steps and
seconds to the first evaluation whose mean (epsilon 0.05, full games) reaches 475.

Stable-Baselines3 (optional, --sb3; needs torch and stable-baselines3): its DQN on
PongNoFrameskip-v4 (AtariWrapper + 4-frame stack, the same schedule settings), steps/s over
the same window and ms per `train()` call; and its RL Zoo CartPole-v1 DQN hyperparameters
for 50,000 steps, wall time and final returns.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TRAIN = os.path.join(REPO, "python", "train.py")
from _machine import cpu_name, keep_tensorflow_out  # noqa: E402

PONG_LEARN_START = 2_000
PONG_WINDOW = 4_000  # agent steps measured after learning starts (+1,000 of warm-up)


def run_train(args, workdir, script=TRAIN):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t = time.time()
    result = subprocess.run([sys.executable, script, *args], cwd=workdir, env=env,
                            capture_output=True, text=True)
    wall = time.time() - t
    if result.returncode != 0:
        name = os.path.basename(script)
        raise RuntimeError(f"{name} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return wall


def metrics(run_dir, kind):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["type"] == kind]


# The fast settings of README's "Fast settings": more environments (one batched forward pass
# for 4 agent steps; the same updates per agent step) and bfloat16 hidden layers.
FAST_FLAGS = ("--num-envs", "4", "--precision", "mixed_bfloat16")


def pong_ours(num_envs, workdir, extra=(), tag=""):
    run_dir = os.path.join(workdir, f"pong-n{num_envs}{tag}-{time.time_ns()}")
    steps = PONG_LEARN_START + 1_000 + PONG_WINDOW
    cmd = ["--steps", str(steps), "--learn-start", str(PONG_LEARN_START),
           "--replay-memory", "100000", "--ep-endt", "1000", "--eval-freq", "0",
           "--save-freq", "0",
           "--prog-freq", "1000", "--num-envs", str(num_envs), *extra, "--run-dir", run_dir]
    run_train(cmd, workdir)
    windows = [r for r in metrics(run_dir, "train")
               if r["step"] - 1000 >= PONG_LEARN_START + 1000]
    seconds = sum(1000 / r["sps"] for r in windows)
    phases = {}
    for key in ("act_ms", "env_ms", "replay_add_ms", "replay_sample_ms", "update_ms"):
        phases[key] = statistics.mean(r[key] for r in windows if key in r)
    return {"num_envs": num_envs, "sps": 1000 * len(windows) / seconds,
            "steps": 1000 * len(windows), "command": "python python/train.py " + " ".join(
                a if a != run_dir else "RUN_DIR" for a in cmd), **phases}


def cartpole_ours(seed, workdir):
    run_dir = os.path.join(workdir, f"cartpole-s{seed}")
    wall = run_train(["--preset", "classic", "--stop-score", "475", "--seed", str(seed),
                      "--run-dir", run_dir], workdir)
    evals = metrics(run_dir, "eval")
    solved = next((e for e in evals if (e["eval_mean_score"] or 0) >= 475), None)
    return {"seed": seed, "solved": solved is not None,
            "steps": solved["step"] if solved else None,
            "run_seconds": solved["run_seconds"] if solved else None,
            "process_seconds": wall, "last_eval": evals[-1]["eval_mean_score"] if evals else None}


def pong_sb3(threads, n_envs=1):
    keep_tensorflow_out()
    import gymnasium as gym
    import ale_py
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    torch.set_num_threads(threads)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=n_envs, seed=0), n_stack=4)
    total = PONG_LEARN_START + 1_000 + PONG_WINDOW
    # train_freq counts steps of the vectorized env (n_envs agent steps each): one gradient
    # step per 4 agent steps in both cases, as ours
    model = DQN("CnnPolicy", env, learning_rate=2.5e-4, buffer_size=100_000,
                learning_starts=PONG_LEARN_START, batch_size=32, gamma=0.99,
                train_freq=max(1, 4 // n_envs), gradient_steps=1,
                target_update_interval=10_000,
                exploration_fraction=(PONG_LEARN_START + 1_000) / total,
                exploration_final_eps=0.1, optimize_memory_usage=False, seed=0, verbose=0,
                device="cpu")
    seconds, updates = sb3_learn_timed(model, total, PONG_LEARN_START + 1_000)
    return {"sps": PONG_WINDOW / seconds, "update_ms": 1e3 * statistics.mean(updates),
            "outside_update_ms": 1e3 * (seconds - sum(updates)) / PONG_WINDOW,
            "torch_threads": torch.get_num_threads()}


def sb3_learn_timed(model, total, window_start):
    """model.learn(total) -> (wall seconds after step window_start, the seconds of each
    train() call after it): SB3's rate over the same window as ours."""
    from stable_baselines3.common.callbacks import BaseCallback

    update_seconds = []
    train = model.train

    def timed_train(*args, **kwargs):
        t = time.perf_counter()
        train(*args, **kwargs)
        update_seconds.append(time.perf_counter() - t)

    model.train = timed_train
    marks = {}

    class Mark(BaseCallback):
        def _on_step(self):
            if self.num_timesteps == window_start:
                marks["start"] = (time.perf_counter(), len(update_seconds))
            return True

    model.learn(total_timesteps=total, callback=Mark())
    end = time.perf_counter()
    start, first_update = marks["start"]
    return end - start, update_seconds[first_update:]


def cartpole_sb3(seed):
    keep_tensorflow_out()
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy

    model = DQN("MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=64,
                buffer_size=100_000, learning_starts=1000, gamma=0.99,
                target_update_interval=10, train_freq=256, gradient_steps=128,
                exploration_fraction=0.16, exploration_final_eps=0.04,
                policy_kwargs=dict(net_arch=[256, 256]), seed=seed, verbose=0, device="cpu")
    t = time.time()
    model.learn(total_timesteps=50_000)
    wall = time.time() - t
    returns = [info["r"] for info in model.ep_info_buffer]
    mean, _ = evaluate_policy(model, gym.make("CartPole-v1"), n_eval_episodes=10,
                              deterministic=True)
    return {"seed": seed, "seconds": wall, "train_return_last": float(np.mean(returns)),
            "eval_mean_greedy": float(mean)}


def emit_cartpole(args, workdir, emit):
    """The CartPole tables: ours to an evaluation mean of 475 per seed, and SB3 with --sb3."""
    emit("## CartPole-v1 with --preset classic, to an evaluation mean >= 475")
    emit()
    emit("| seed | solved | agent steps | seconds (run) | seconds (process, incl. "
         "start-up) | last evaluation |")
    emit("| --- | --- | --- | --- | --- | --- |")
    for seed in range(1, args.seeds + 1):
        r = cartpole_ours(seed, workdir)
        emit(f"| {seed} | {'yes' if r['solved'] else 'no'} | {r['steps'] or '-'} | "
             f"{r['run_seconds']:.1f} | {r['process_seconds']:.1f} | "
             f"{r['last_eval']:.1f} |" if r["solved"] else
             f"| {seed} | no | - | - | {r['process_seconds']:.1f} | {r['last_eval']} |")
    if args.sb3:
        emit()
        emit("SB3 DQN, RL Zoo CartPole-v1 hyperparameters, 50,000 steps:")
        emit()
        emit("| seed | seconds | mean training return (last 100 episodes) | "
             "greedy evaluation mean (10 episodes) |")
        emit("| --- | --- | --- | --- |")
        for seed in range(1, args.seeds + 1):
            r = cartpole_sb3(seed)
            emit(f"| {seed} | {r['seconds']:.1f} | {r['train_return_last']:.1f} | "
                 f"{r['eval_mean_greedy']:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sb3", action="store_true", help="also run Stable-Baselines3")
    parser.add_argument("--seeds", type=int, default=3, help="CartPole seeds (default 3)")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--rounds", type=int, default=1, help="Pong rounds (default 1)")
    parser.add_argument("--pong-only", action="store_true", help="skip CartPole")
    args = parser.parse_args()

    lines = []

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    from importlib.metadata import version  # TensorFlow stays out of SB3's process
    emit(f"Machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
         f"TensorFlow {version('tensorflow')}. Command: `python benchmarks/bench_train.py"
         f"{' --sb3' if args.sb3 else ''}{' --pong-only' if args.pong_only else ''}"
         f"{f' --rounds {args.rounds}' if args.rounds != 1 else ''}`.")
    emit()
    with tempfile.TemporaryDirectory() as workdir:
        emit(f"## Pong (ALE/Pong-v5), agent steps/s after learning starts "
             f"({PONG_WINDOW:,} steps)")
        emit()
        emit("| trainer | steps/s (median; rounds) | vs SB3, same envs | update (ms) | "
             "act (ms/step) | env (ms/step) | replay add (ms/call) | "
             "replay sample (ms/batch) |")
        emit("| --- | --- | --- | --- | --- | --- | --- | --- |")
        ours_configs = [("train.py --num-envs 1", 1, ()), ("train.py --num-envs 4", 4, ()),
                        ("train.py " + " ".join(FAST_FLAGS), 4, FAST_FLAGS[2:])]
        sb3_configs = [(1, 2), (1, 1), (4, 2)] if args.sb3 else []  # (n_envs, threads)
        ours = {name: [] for name, _, _ in ours_configs}
        sb3 = {config: [] for config in sb3_configs}
        for _ in range(args.rounds):
            for i, (name, n, extra) in enumerate(ours_configs):
                ours[name].append(pong_ours(n, workdir, extra, tag=f"c{i}"))
            for n, threads in sb3_configs:
                sb3[(n, threads)].append(pong_sb3(threads, n))

        def median_sps(results):
            return statistics.median(r["sps"] for r in results)

        def rounds_text(results):
            return ", ".join(f"{r['sps']:.1f}" for r in results)

        best_sb3 = {}
        for (n, threads), results in sb3.items():
            best_sb3[n] = max(best_sb3.get(n, 0.0), median_sps(results))
        for name, n, _ in ours_configs:
            results = ours[name]
            ratio = (f"{median_sps(results) / best_sb3[n]:.2f}x" if n in best_sb3 else "-")
            phase = {k: statistics.median(r[k] for r in results)
                     for k in ("update_ms", "act_ms", "env_ms", "replay_add_ms",
                               "replay_sample_ms")}
            emit(f"| {name} | {median_sps(results):.1f} ({rounds_text(results)}) | {ratio} | "
                 f"{phase['update_ms']:.1f} | {phase['act_ms']:.2f} | {phase['env_ms']:.2f} | "
                 f"{phase['replay_add_ms']:.3f} | {phase['replay_sample_ms']:.3f} |")
        for (n, threads), results in sb3.items():
            update = statistics.median(r["update_ms"] for r in results)
            outside = statistics.median(r["outside_update_ms"] for r in results)
            emit(f"| SB3 DQN (n_envs {n}, torch {threads} threads) | {median_sps(results):.1f} "
                 f"({rounds_text(results)}) | {median_sps(results) / best_sb3[n]:.2f}x | "
                 f"{update:.1f} | {outside:.2f} (all outside updates) | | | |")
        emit()
        emit("Command of the first row: `" + ours[ours_configs[0][0]][0]["command"] + "`")
        emit()
        if not args.pong_only:
            emit_cartpole(args, workdir, emit)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
