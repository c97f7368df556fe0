"""Train DQN the way DeepMind's DQN 3.0 did, on gymnasium + ale-py, with tfdqn_ops.

    python python/train.py                                 # ALE/Pong-v5, DQN 3.0's settings
    python python/train.py --preset classic                # CartPole-v1, small settings
    python python/train.py --resume runs/ALE-Pong-v5-s1-…  # continue a stopped run
    python python/train.py --help                          # every setting and its default

Each loop iteration is one agent step of each of the --num-envs environments: act
epsilon-greedily on the last --hist-len frames, step the environments, store the transitions
in the replay memory, then, for each of those agent steps in turn, DQN 3.0's schedule: an
update every --update-freq steps after --learn-start, a target copy when
step % --target-q == 1. Evaluations, checkpoints and summaries happen when the step count
crosses a multiple of their period. The parts (acting, learning, evaluation, the trainer
state a checkpoint holds) live in python/tfdqn_trainer/trainer.py.

Exit codes: 0 finished, or stopped by SIGINT/SIGTERM after saving a checkpoint; 2 bad input.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfdqn_trainer import checkpoint  # noqa: E402  (these three import no TensorFlow, so bad input
from tfdqn_trainer import config as config_lib  # noqa: E402   is reported before the slow import)
from tfdqn_trainer import envs as envs_lib  # noqa: E402
from tfdqn_trainer.config import Config, ConfigError  # noqa: E402
from tfdqn_trainer.stop_request import StopRequest  # noqa: E402


def parse_config(argv=None) -> Config:
    """Flags -> a validated Config, or ConfigError. Cheap checks only."""
    cfg, explicit = config_lib.parse_args(argv)
    apex_only = [name for name in config_lib.APEX_ONLY if name in explicit]
    if apex_only:
        raise ConfigError(f"{config_lib.flag(apex_only[0])} is a setting of Ape-X: run "
                          "tfdqn-apex (python/apex.py) for a distributed run")
    if cfg.resume:
        cfg = config_lib.resume_config(cfg.resume, explicit)
        path = checkpoint.latest(cfg.resume)
        if path is None:
            raise ConfigError(f"--resume {cfg.resume!r} has no complete checkpoint "
                              "(checkpoints/ckpt-*) to continue from")
        try:
            checkpoint.check_format(path)
        except checkpoint.CheckpointFormatError as e:
            raise ConfigError(f"--resume: {e}") from None
    config_lib.validate(cfg)
    envs_lib.check_env(cfg)
    config_lib.settle_run_dir(cfg)
    return cfg


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as e:
        config_lib.fail(str(e))

    # ---- slow imports, only once the input is known to be good ------------------------------
    from tfdqn_trainer.quiet_tf import import_tensorflow
    tf = import_tensorflow()  # before keras and tfdqn_ops, which import it too

    import numpy as np
    from tfdqn_ops import ReplayMemory

    from tfdqn_trainer import networks
    from tfdqn_trainer.agent import JitCompileError
    from tfdqn_trainer.build import make_agent, make_pool
    from tfdqn_trainer.logger import EtaEstimator, RunLogger, truncate_metrics
    from tfdqn_trainer.trainer import (Actor, Evaluator, Learner, PhaseTimes, TrainerState,
                                       close_log, crossed, epsilon_schedule,
                                       restore_checkpoint, save_checkpoint,
                                       stop_score_reached, write_summary)

    if cfg.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.tf_threads)
    seed = envs_lib.derive_seed

    # ---- environments, replay memory, networks, the parts -----------------------------------
    pool = make_pool(cfg, cfg.num_envs, training=True)
    eval_pool = make_pool(cfg, cfg.eval_envs, training=False, codec=pool.codec)
    replay = ReplayMemory(cfg.replay_memory, frame_shape=pool.codec.frame_shape,
                          history=cfg.hist_len, num_envs=cfg.num_envs, seed=seed(cfg.seed, 3),
                          n_step=cfg.n_step, discount=cfg.discount,
                          priority_exponent=cfg.priority_exponent if cfg.prioritized else 0.0)
    try:
        kind, agent = make_agent(cfg, pool)
    except JitCompileError as e:
        config_lib.fail(str(e))
    times, stop = PhaseTimes(), StopRequest()
    actor = Actor(cfg, pool, replay, agent.q_values, epsilon=epsilon_schedule(cfg), times=times,
                  rng=np.random.default_rng(seed(cfg.seed, 1)))  # exploration, tie-breaks
    os.makedirs(cfg.run_dir, exist_ok=True)
    checkpoint.write_json_atomic(os.path.join(cfg.run_dir, "config.json"),
                                 config_lib.config_to_json(cfg))
    pool.reset([seed(cfg.seed, 2, i) for i in range(cfg.num_envs)])
    state = TrainerState()
    if cfg.resume:  # the state of the run we continue
        path = checkpoint.latest(cfg.run_dir)
        try:
            state = restore_checkpoint(path, agent, actor, ReplayMemory)
        except ValueError as e:  # the checkpoint does not fit this run's networks or envs
            config_lib.fail(f"--resume: {e}")
        truncate_metrics(cfg.run_dir, state.step)
        print(f"resuming {cfg.run_dir} from step {state.step:,} ({path})", flush=True)
    learner = Learner(cfg, agent, actor.replay, pool.codec, times=times)
    log = RunLogger(cfg.run_dir, cfg.steps, state.step, eta=EtaEstimator(
        cfg.steps, learn_start=cfg.learn_start, eval_freq=cfg.eval_freq,
        save_freq=cfg.save_freq))
    if state.last_eval is not None:
        log.last_eval = f"{state.last_eval:.1f}"
    evaluator = Evaluator(cfg, agent, eval_pool, log=log, times=times,
                          should_stop=lambda: bool(stop))

    def save() -> None:
        save_checkpoint(cfg, state, agent, actor, log=log, times=times)

    print(f"training {cfg.env} ({kind} network, {pool.n_actions} actions, "
          f"{networks.count_parameters(agent.online):,} parameters) for {cfg.steps:,} steps; "
          f"run dir {cfg.run_dir}", flush=True)
    started = time.time() - state.train_seconds
    if state.eval_pending:  # stopped during an evaluation: redo it
        evaluator.run(state, started)
    saved_at = state.step if cfg.resume else None
    while state.step < cfg.steps and not stop:
        before = state.step
        acted = actor.act(before)
        # DQN 3.0's updates and target copies for each of these agent steps; the last update
        # also computes Q for the next action selection when that one may be greedy.
        greedy_next = actor.epsilon(before + cfg.num_envs) < 1.0
        learned = learner.learn(before, acted.steps,
                                next_states=actor.states if greedy_next else None)
        actor.prefetched_q = learned.next_q
        state.updates += learned.updates
        state.step += acted.steps
        for score, length in acted.finished:
            log.game(state.step, score, length, state.record_game(score))

        # ---- evaluate, save, report ---------------------------------------------------------
        if crossed(before, state.step, cfg.eval_freq) and state.step > cfg.learn_start:
            evaluator.run(state, started)
            if stop_score_reached(cfg, state):
                log.message(f"evaluation mean {state.last_eval:.2f} >= --stop-score "
                            f"{cfg.stop_score}: stopping")
                break
        state.train_seconds = time.time() - started
        if crossed(before, state.step, cfg.save_freq):
            save()
            saved_at = state.step
        if crossed(before, state.step, cfg.prog_freq):
            write_summary(log, state, acted.epsilon, learner, times, len(actor.replay))
        else:
            log.progress(state.step, acted.epsilon)

    state.train_seconds = time.time() - started
    if saved_at != state.step:
        save()
    close_log(log, state, stop, "train.py", cfg.run_dir,
              f"done: {state.step:,} steps in {state.train_seconds:.0f} s; best evaluation "
              f"{state.best_score}")
    pool.close()
    eval_pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
