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
crosses a multiple of their period.

Exit codes: 0 finished, or stopped by SIGINT/SIGTERM after saving a checkpoint; 2 bad input.
"""

import os
import random
import signal
import sys
import time
from collections import defaultdict, deque

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dqn import checkpoint  # noqa: E402  (these three import no TensorFlow, so bad input
from dqn import config as config_lib  # noqa: E402   is reported before the slow import)
from dqn import envs as envs_lib  # noqa: E402
from dqn.config import Config, ConfigError  # noqa: E402


def parse_config(argv=None) -> Config:
    """Flags -> a validated Config, or ConfigError. Cheap checks only."""
    cfg, explicit = config_lib.parse_args(argv)
    if cfg.resume:
        cfg = config_lib.resume_config(cfg.resume, explicit)
        if checkpoint.latest(cfg.resume) is None:
            raise ConfigError(f"--resume {cfg.resume!r} has no complete checkpoint "
                              "(checkpoints/ckpt-*) to continue from")
    config_lib.validate(cfg)
    envs_lib.check_env(cfg)
    if cfg.run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        cfg.run_dir = os.path.join("runs", f"{cfg.env.replace('/', '-')}-s{cfg.seed}-{stamp}")
    elif not cfg.resume and os.path.isfile(os.path.join(cfg.run_dir, "config.json")):
        raise ConfigError(f"--run-dir {cfg.run_dir!r} already holds a run: continue it with "
                          f"--resume {cfg.run_dir}, or choose another --run-dir")
    return cfg


class StopRequest:
    """SIGINT/SIGTERM ask the loop to save and exit; a second SIGINT stops at once."""

    def __init__(self):
        self.signal_name = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __bool__(self):
        return self.signal_name is not None


class PhaseTimes:
    """Wall time per phase of the loop (act, env, replay add/sample, update, ...)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.seconds, self.calls = defaultdict(float), defaultdict(int)

    def lap(self, phase: str, since: float, calls: int = 1) -> float:
        now = time.perf_counter()
        self.seconds[phase] += now - since
        self.calls[phase] += calls
        return now

    def ms_per_call(self) -> dict:
        return {f"{p}_ms": 1e3 * s / self.calls[p] for p, s in self.seconds.items()
                if self.calls[p]}


def crossed(before: int, after: int, period: int) -> bool:
    """Whether (before, after] contains a multiple of period (0: never)."""
    return period > 0 and after // period > before // period


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as e:
        config_lib.fail(str(e))

    # ---- slow imports, only once the input is known to be good ------------------------------
    from dqn.quiet_tf import import_tensorflow
    tf = import_tensorflow()  # before keras and tfdqn_ops, which import it too

    import keras
    import numpy as np
    from tfdqn_ops import ReplayMemory

    from dqn import agent as agent_lib
    from dqn import networks
    from dqn.build import make_pool, network_factory
    from dqn.evaluation import evaluate
    from dqn.logger import EtaEstimator, RunLogger, truncate_metrics

    if cfg.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.tf_threads)
    seed = envs_lib.derive_seed

    # ---- environments, replay memory, networks ----------------------------------------------
    pool = make_pool(cfg, cfg.num_envs, training=True)
    codec = pool.codec  # how observations go into the uint8 replay
    eval_pool = make_pool(cfg, cfg.eval_envs, training=False, codec=codec)
    replay = ReplayMemory(cfg.replay_memory, frame_shape=codec.frame_shape,
                          history=cfg.hist_len, num_envs=cfg.num_envs, seed=seed(cfg.seed, 3))
    kind, spec, build_network = network_factory(cfg, pool)
    keras.utils.set_random_seed(cfg.seed)  # network initialization
    try:
        agent = agent_lib.Agent(
            build_network, spec,
            discount=cfg.discount, clip_delta=cfg.clip_delta, lr=cfg.lr,
            double_dqn=cfg.double_dqn, optimizer=cfg.optimizer,
            loss_reduction=cfg.loss_reduction, jit_compile=cfg.jit_compile,
            jit_act=cfg.jit_act)
    except agent_lib.JitCompileError as e:
        config_lib.fail(str(e))
    rng = np.random.default_rng(seed(cfg.seed, 1))  # exploration and tie-breaking

    # ---- a new run, or the state of the one we continue ------------------------------------
    os.makedirs(cfg.run_dir, exist_ok=True)
    checkpoint.write_json_atomic(os.path.join(cfg.run_dir, "config.json"),
                                 config_lib.config_to_json(cfg))
    pool.reset([seed(cfg.seed, 2, i) for i in range(cfg.num_envs)])
    state = dict(step=0, updates=0, games=0, train_seconds=0.0, eval_index=0,
                 eval_pending=False, best_score=None, last_eval=None, recent_scores=[])
    if cfg.resume:
        path = checkpoint.latest(cfg.run_dir)
        agent.set_state(checkpoint.load_agent_state(path))
        replay = ReplayMemory.load(os.path.join(path, "replay.bin"))
        saved = checkpoint.load_trainer_state(path)
        restarted = pool.set_state(saved.pop("envs"))
        rng.bit_generator.state = saved.pop("rng")
        random.setstate(saved.pop("python_random"))
        np.random.set_state(saved.pop("numpy_global"))
        state.update(saved)
        truncate_metrics(cfg.run_dir, state["step"])
        print(f"resuming {cfg.run_dir} from step {state['step']:,} ({path})"
              + (f"; envs {restarted} restart their episode" if restarted else ""), flush=True)
    step = state["step"]
    log = RunLogger(cfg.run_dir, cfg.steps, step, eta=EtaEstimator(
        cfg.steps, learn_start=cfg.learn_start, eval_freq=cfg.eval_freq,
        save_freq=cfg.save_freq))
    if state["last_eval"] is not None:
        log.last_eval = f"{state['last_eval']:.1f}"
    recent_scores = deque(state["recent_scores"], maxlen=100)
    times = PhaseTimes()
    stop = StopRequest()

    def epsilon(at: int) -> float:
        return agent_lib.linearly_decaying_epsilon(
            at, learn_start=cfg.learn_start, ep_start=cfg.ep_start, ep_end=cfg.ep_end,
            ep_endt=cfg.ep_endt)

    def save() -> None:
        t = time.perf_counter()
        trainer_state = dict(state, step=step, recent_scores=list(recent_scores), next_q=next_q,
                             envs=pool.get_state(), rng=rng.bit_generator.state,
                             python_random=random.getstate(), numpy_global=np.random.get_state())
        path = checkpoint.save(cfg.run_dir, step, agent.get_state(), trainer_state, replay)
        seconds = times.lap("checkpoint", t) - t
        log.eta.checkpoint_took(seconds)
        log.message(f"checkpoint {path} ({seconds:.1f} s)")

    def run_evaluation() -> None:
        """DQN 3.0: --eval-steps at --eval-ep on full games; keep the best network."""
        t = time.perf_counter()
        index = state["eval_index"]
        state["eval_pending"] = True  # until it completes (a stop during it redoes it)
        result = evaluate(agent.q_values, eval_pool, cfg.hist_len, epsilon=cfg.eval_ep,
                          rng=np.random.default_rng(seed(cfg.seed, 5, index)),
                          seeds=[seed(cfg.seed, 4, index, i) for i in range(cfg.eval_envs)],
                          steps=cfg.eval_steps,
                          should_stop=lambda: bool(stop))
        if result.aborted:
            return
        best = result.mean is not None and (state["best_score"] is None
                                            or result.mean > state["best_score"])
        if best:
            state["best_score"] = result.mean
            checkpoint.save_best(cfg.run_dir, [w.numpy() for w in agent.online.weights],
                                 step, result.mean)
        state.update(eval_index=index + 1, eval_pending=False, last_eval=result.mean)
        times.lap("eval", t)
        log.evaluation(step, dict(result.record(), best=best,
                                  eval_seconds=time.perf_counter() - t,
                                  run_seconds=time.time() - started))

    # Preallocated minibatches: K x B windows of hist_len + 1 frames (s = [:-1], s2 = [1:]).
    max_k = cfg.n_replay * -(-cfg.num_envs // cfg.update_freq)
    windows = np.empty((max_k, cfg.minibatch_size, cfg.hist_len + 1, *codec.frame_shape),
                       np.uint8)
    batch_a = np.empty((max_k, cfg.minibatch_size), np.int32)
    batch_r = np.empty((max_k, cfg.minibatch_size), np.float32)
    batch_t = np.empty((max_k, cfg.minibatch_size), np.float32)
    learned = dict(loss=0.0, q=0.0, calls=0)

    def learn(k: int, next_states=None):
        """k minibatch updates: sampled now, applied one after the other in one call. With
        next_states, returns Q(next_states) of the updated network (else None)."""
        if replay.num_valid_windows == 0:
            return None
        t = time.perf_counter()
        for i in range(k):
            replay.sample_windows_into(windows[i], batch_a[i], batch_r[i], batch_t[i])
        t = times.lap("replay_sample", t, k)
        args = (codec.decode(windows[:k]), batch_a[:k], batch_r[:k], batch_t[:k])
        next_q = None
        if next_states is None:
            stats = agent.update(*args)
        else:
            stats, next_q = agent.update(*args, next_states=next_states)
        learned["loss"] += float(stats.loss)
        learned["q"] += float(stats.mean_q)
        learned["calls"] += 1
        state["updates"] += k
        times.lap("update", t, k)
        return next_q

    n = cfg.num_envs
    print(f"training {cfg.env} ({kind} network, {pool.n_actions} actions, "
          f"{networks.count_parameters(agent.online):,} parameters) for {cfg.steps:,} steps; "
          f"run dir {cfg.run_dir}", flush=True)
    started = time.time() - state["train_seconds"]

    if state["eval_pending"]:  # stopped during an evaluation: redo it
        run_evaluation()
    saved_at = step if cfg.resume else None
    # Q of the current acting states when the last update already computed it (same weights).
    next_q = state.pop("next_q", None)
    while step < cfg.steps and not stop:
        # ---- act ----------------------------------------------------------------------------
        t = time.perf_counter()
        eps = epsilon(step)
        states = codec.decode(replay.acting_states(pool.frames))
        q_values = agent.q_values if next_q is None else (lambda _, q=next_q: q)
        actions = agent_lib.select_actions(q_values, states, eps, pool.n_actions, rng)
        t = times.lap("act", t, n)
        frames, terminals = pool.frames.copy(), pool.terminals.copy()
        rewards, finished = pool.step(actions)
        t = times.lap("env", t, n)
        if cfg.reward_clip > 0:
            rewards = np.clip(rewards, -cfg.reward_clip, cfg.reward_clip)
        replay.add(frames, actions, rewards, terminals)
        times.lap("replay_add", t)

        # ---- learn: DQN 3.0's schedule for each of these agent steps --------------------------
        # (without --count-terminal-steps, an env that only reset took no step: MinAtar's t)
        counted = n if cfg.count_terminal_steps else int(pool.acted.sum())
        events = agent_lib.learning_events(
            step, counted, learn_start=cfg.learn_start, update_freq=cfg.update_freq,
            n_replay=cfg.n_replay, target_q=cfg.target_q)
        last_update = max((i for i, (e, _) in enumerate(events) if e == "update"), default=-1)
        next_q = None
        for i, (event, k) in enumerate(events):
            if event == "copy":
                agent.copy_target()
            elif i == last_update and epsilon(step + n) < 1.0:
                # the next action selection's forward pass rides along with this update
                next_q = learn(k, codec.decode(replay.acting_states(pool.frames)))
            else:
                learn(k)
        before, step = step, step + counted

        for score, length in finished:
            state["games"] += 1
            recent_scores.append(score)
            log.game(step, score, length, float(np.mean(recent_scores)))

        # ---- evaluate, save, report ---------------------------------------------------------
        if crossed(before, step, cfg.eval_freq) and step > cfg.learn_start:
            run_evaluation()
            if (cfg.stop_score is not None and state["last_eval"] is not None
                    and state["last_eval"] >= cfg.stop_score and not state["eval_pending"]):
                log.message(f"evaluation mean {state['last_eval']:.2f} >= --stop-score "
                            f"{cfg.stop_score}: stopping")
                break
        state["train_seconds"] = time.time() - started
        if crossed(before, step, cfg.save_freq):
            save()
            saved_at = step
        if crossed(before, step, cfg.prog_freq):
            calls = learned["calls"]
            paused = times.seconds.get("eval", 0.0) + times.seconds.get("checkpoint", 0.0)
            log.train(step, paused_seconds=paused, record=dict(
                epsilon=eps, loss=learned["loss"] / calls if calls else None,
                mean_q=learned["q"] / calls if calls else None, updates=state["updates"],
                games=state["games"], replay_size=len(replay),
                mean_return=float(np.mean(recent_scores)) if recent_scores else None,
                **times.ms_per_call()))
            learned.update(loss=0.0, q=0.0, calls=0)
            times.reset()  # each summary reports ms per call since the previous one
            log.progress(step, eps, force=True, newline=True, extra=(
                f"games {state['games']}"
                + (f" (last 100: {np.mean(recent_scores):.1f})" if recent_scores else "")))
        else:
            log.progress(step, eps)

    state["train_seconds"] = time.time() - started
    if saved_at != step:
        save()
    if stop:
        log.message(f"stopped by {stop.signal_name} at step {step:,}; continue with: "
                    f"python python/train.py --resume {cfg.run_dir}")
    else:
        log.message(f"done: {step:,} steps in {state['train_seconds']:.0f} s; best evaluation "
                    f"{state['best_score']}")
    log.close()
    pool.close()
    eval_pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
