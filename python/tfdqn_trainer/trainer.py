"""The parts python/train.py's loop is made of, each with its inputs and outputs explicit.

- TrainerState: the counters and evaluation history of a run; with the networks, the
  optimizer, the replay memory, the environments and the random generators it is what a
  checkpoint holds (save_checkpoint / restore_checkpoint).
- Actor: the acting part. Epsilon-greedy actions on the environments' current states, one
  step of every environment, the transitions into the replay memory. It needs a Q function,
  not the learner, so an actor process of a distributed trainer can run it alone.
- Learner: the learning part. DQN 3.0's schedule of minibatch updates and target copies
  after each agent step, minibatches sampled from the replay memory.
- Evaluator: DQN 3.0's periodic evaluation at epsilon 0.05, keeping the best network.
- PhaseTimes, crossed: where the wall time goes, and when a periodic event is due.

One saving crosses the parts: the learner's last update before an action selection can
also return Q of the states the actor is about to act on, computed with the updated weights
in the same call (Learner.learn's next_states; the actor takes it as prefetched_q). Acting
then sees exactly the weights DQN 3.0 would use, one forward call earlier.
"""

import random
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Callable, List, NamedTuple, Optional, Tuple

import numpy as np

from tfdqn_trainer import agent as agent_lib
from tfdqn_trainer import checkpoint
from tfdqn_trainer.config import Config
from tfdqn_trainer.envs import EnvPool, derive_seed
from tfdqn_trainer.evaluation import evaluate

RECENT_GAMES = 100  # the moving average of training returns the progress line shows


def crossed(before: int, after: int, period: int) -> bool:
    """Whether (before, after] contains a multiple of period (0: never)."""
    return period > 0 and after // period > before // period


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


@dataclass
class TrainerState:
    """A run's counters and evaluation history (plain values, written as they are)."""
    step: int = 0               # agent steps taken, all environments together
    updates: int = 0            # minibatch updates applied
    games: int = 0              # training games finished
    train_seconds: float = 0.0  # wall time of the run so far, over all its processes
    eval_index: int = 0         # evaluations completed (seeds each evaluation's games)
    eval_pending: bool = False  # an evaluation was interrupted: a resumed run redoes it
    best_score: Optional[float] = None
    last_eval: Optional[float] = None
    recent_scores: deque = field(default_factory=lambda: deque(maxlen=RECENT_GAMES))

    def record_game(self, score: float) -> float:
        """Count a finished training game; returns the mean of the recent ones."""
        self.games += 1
        self.recent_scores.append(score)
        return float(np.mean(self.recent_scores))

    def to_dict(self) -> dict:
        return dict(step=self.step, updates=self.updates, games=self.games,
                    train_seconds=self.train_seconds, eval_index=self.eval_index,
                    eval_pending=self.eval_pending, best_score=self.best_score,
                    last_eval=self.last_eval, recent_scores=list(self.recent_scores))

    @classmethod
    def from_dict(cls, saved: dict) -> "TrainerState":
        saved = dict(saved)
        recent = deque(saved.pop("recent_scores", []), maxlen=RECENT_GAMES)
        return cls(**saved, recent_scores=recent)


class ActResult(NamedTuple):
    epsilon: float
    steps: int  # agent steps to count: every env, or (MinAtar's t) only envs that acted
    finished: List[Tuple[float, int]]  # (score, length) of the games that ended


def epsilon_schedule(cfg: Config) -> Callable[[int], float]:
    """DQN 3.0's epsilon as a function of the agent step, with the run's --ep-* settings."""
    def epsilon(step: int) -> float:
        return agent_lib.linearly_decaying_epsilon(
            step, learn_start=cfg.learn_start, ep_start=cfg.ep_start, ep_end=cfg.ep_end,
            ep_endt=cfg.ep_endt)
    return epsilon


class Actor:
    """Acts in cfg.num_envs environments and writes what happens to a replay memory.

    replay: the ReplayMemory the frames go into and the acting histories come from (train.py's
      replay; an Ape-X actor's small local one, which keeps its histories only);
    q_values: decoded states [N, hist_len, ...] -> Q [N, A];
    epsilon: agent step -> exploration (epsilon_schedule(cfg), or an Ape-X actor's constant);
    on_step: if given, also called after every step as on_step(frames, actions, rewards,
      terminals, q) with what went into the replay and the Q values the actions were chosen
      on (None when every env explored and no Q was computed): Ape-X's outbox;
    rng: exploration and greedy tie-breaks.
    """

    def __init__(self, cfg: Config, pool: EnvPool, replay, q_values: Callable, *,
                 epsilon: Callable[[int], float], rng: np.random.Generator,
                 times: PhaseTimes, on_step: Optional[Callable] = None):
        self.cfg, self.pool, self.replay, self.q_values = cfg, pool, replay, q_values
        self.epsilon, self.on_step = epsilon, on_step
        self.rng, self.times = rng, times
        self.codec = pool.codec
        # Q of states() with the current weights when the learner already computed it.
        self.prefetched_q: Optional[np.ndarray] = None

    def states(self) -> np.ndarray:
        """The network input for the environments' current frames (the last hist_len)."""
        return self.codec.decode(self.replay.acting_states(self.pool.frames))

    def act(self, step: int, q: Optional[np.ndarray] = None) -> ActResult:
        """One agent step of every environment, at agent step count `step`; q: Q of
        states() if the caller has it (else prefetched_q, else computed if needed)."""
        n = len(self.pool)
        t = time.perf_counter()
        eps = self.epsilon(step)
        states = self.states()
        if q is None:
            q = self.prefetched_q
        self.prefetched_q = None
        computed = []

        def q_values(s):
            computed.append(self.q_values(s))
            return computed[0]

        actions = agent_lib.select_actions(q_values if q is None else (lambda _: q), states,
                                           eps, self.pool.n_actions, self.rng)
        t = self.times.lap("act", t, n)
        frames, terminals = self.pool.frames.copy(), self.pool.terminals.copy()
        rewards, finished = self.pool.step(actions)
        t = self.times.lap("env", t, n)
        if self.cfg.reward_clip > 0:
            rewards = np.clip(rewards, -self.cfg.reward_clip, self.cfg.reward_clip)
        self.replay.add(frames, actions, rewards, terminals)
        if self.on_step is not None:
            self.on_step(frames, actions, rewards, terminals, computed[0] if computed else q)
        self.times.lap("replay_add", t)
        counted = n if self.cfg.count_terminal_steps else int(self.pool.acted.sum())
        return ActResult(eps, counted, finished)


class LearnResult(NamedTuple):
    updates: int  # minibatch updates applied
    next_q: Optional[np.ndarray]  # Q(next_states()) after the last update, when asked for


def importance_weights(weights: np.ndarray, normalization: str) -> np.ndarray:
    """The memory's importance weights (N P(i))^-beta / max over the memory, rescaled for
    --importance-normalization: "memory" keeps them; "batch" divides them by the
    minibatch's largest, so that the largest is 1 (DQN Zoo's and Dopamine's rule).

    Why batch is the default: the memory's maximum belongs to its least likely transition,
    whose priority can be as small as --priority-epsilon. On MinAtar Breakout (n-step 3,
    alpha 0.6, beta 0.55, 250,000 frames) the sampled weights had a median of 0.025 that way,
    which cut the step of (centered RMSprop's nearly linear) updates 40-fold; Adam, which
    does not see a gradient's scale, hides this.
    """
    if normalization == "memory":
        return weights
    if normalization == "batch":
        return (weights / np.max(weights)).astype(np.float32)
    raise ValueError(f"importance normalization must be 'batch' or 'memory', got "
                     f"{normalization!r}")


def importance_exponent(cfg: Config, step: int) -> float:
    """beta of prioritized replay at agent step `step`: --importance-exponent at step 0,
    rising linearly to 1 at --steps (Schaul et al. 2016)."""
    start = cfg.importance_exponent
    return start + (1.0 - start) * min(1.0, step / cfg.steps)


def weighted_update(cfg: Config, agent, codec, batch):
    """One update on a batch of sample_batch's form (s, s2 apart, per-sample discounts and
    importance weights; Learner and Ape-X's learner both use it). Returns (UpdateStats, the
    new priorities |TD error| + --priority-epsilon, or None without --prioritized)."""
    weights = (importance_weights(batch.weight, cfg.importance_normalization)
               if cfg.prioritized else batch.weight)
    stats, td_abs = agent.update_weighted(
        codec.decode(batch.s), codec.decode(batch.s2), batch.a, batch.r, batch.term,
        batch.discount, weights)
    # |TD error| + epsilon: Schaul et al.'s proportional rule
    return stats, (td_abs + cfg.priority_epsilon if cfg.prioritized else None)


def stop_score_reached(cfg: Config, state: "TrainerState") -> bool:
    """--stop-score: the last completed evaluation's mean reached it."""
    return (cfg.stop_score is not None and state.last_eval is not None
            and not state.eval_pending and state.last_eval >= cfg.stop_score)


def record_evaluation(cfg: Config, state: "TrainerState", model, mean: Optional[float],
                      log, record: dict) -> bool:
    """An evaluation's mean into the state (its counter, last and best score), the network it
    evaluated (`model`) saved as the best when it beats every earlier one, and the record
    logged. Returns whether it was the best."""
    best = mean is not None and (state.best_score is None or mean > state.best_score)
    if best:
        state.best_score = mean
        checkpoint.save_best(cfg.run_dir, model, state.step, mean)
    state.eval_index, state.eval_pending, state.last_eval = state.eval_index + 1, False, mean
    log.evaluation(state.step, dict(record, best=best))
    return best


class Learner:
    """Applies DQN 3.0's updates and target copies, minibatches drawn from the replay."""

    def __init__(self, cfg: Config, agent, replay, codec, *, times: PhaseTimes):
        self.cfg, self.agent, self.replay, self.codec, self.times = cfg, agent, replay, codec, times
        # Preallocated minibatches: K x B windows of hist_len + 1 frames (s = [:-1], s2 = [1:]),
        # K the most updates one loop iteration can merge into one call.
        max_k = cfg.n_replay * -(-cfg.num_envs // cfg.update_freq)
        b = cfg.minibatch_size
        self._windows = np.empty((max_k, b, cfg.hist_len + 1, *codec.frame_shape), np.uint8)
        self._actions = np.empty((max_k, b), np.int32)
        self._rewards = np.empty((max_k, b), np.float32)
        self._terminals = np.empty((max_k, b), np.float32)
        self._loss_sum = self._q_sum = 0.0
        self._calls = 0
        # n-step returns or prioritized replay: minibatches from sample_batch (s and s2 apart,
        # per-sample discounts and importance weights), one update per call.
        self.weighted = cfg.n_step > 1 or cfg.prioritized

    def importance_exponent(self, step: int) -> float:
        return importance_exponent(self.cfg, step)

    def learn(self, step: int, num_steps: int,
              next_states: Optional[Callable[[], np.ndarray]] = None) -> LearnResult:
        """What follows agent steps step .. step + num_steps - 1. With next_states, the last
        update also returns Q(next_states()) computed with its updated weights, which saves
        the next action selection a forward call."""
        cfg = self.cfg
        events = agent_lib.learning_events(
            step, num_steps, learn_start=cfg.learn_start, update_freq=cfg.update_freq,
            n_replay=cfg.n_replay, target_q=cfg.target_q)
        last_update = max((i for i, (e, _) in enumerate(events) if e == "update"), default=-1)
        updates, next_q = 0, None
        for i, (event, k) in enumerate(events):
            if event == "copy":
                self.agent.copy_target()
                continue
            if self.weighted:
                updates += self._update_weighted(k, self.importance_exponent(step))
                continue
            fused = i == last_update and next_states is not None
            done, q = self._update(k, next_states() if fused else None)
            updates += done
            next_q = q if fused else next_q
        return LearnResult(updates, next_q)

    def _update(self, k: int, next_states=None) -> Tuple[int, Optional[np.ndarray]]:
        """k minibatch updates sampled now and applied one after the other in one call."""
        if self.replay.num_valid_windows == 0:
            return 0, None
        t = time.perf_counter()
        for i in range(k):
            self.replay.sample_windows_into(self._windows[i], self._actions[i],
                                            self._rewards[i], self._terminals[i])
        t = self.times.lap("replay_sample", t, k)
        args = (self.codec.decode(self._windows[:k]), self._actions[:k], self._rewards[:k],
                self._terminals[:k])
        next_q = None
        if next_states is None:
            stats = self.agent.update(*args)
        else:
            stats, next_q = self.agent.update_then_q(*args, next_states)
        self._loss_sum += float(stats.loss)
        self._q_sum += float(stats.mean_q)
        self._calls += 1
        self.times.lap("update", t, k)
        return k, next_q

    def _update_weighted(self, k: int, importance_exponent: float) -> int:
        """k minibatch updates, each sampled after the previous one's new priorities."""
        cfg = self.cfg
        if self.replay.num_valid_windows == 0:
            return 0
        for _ in range(k):
            t = time.perf_counter()
            batch = self.replay.sample_batch(cfg.minibatch_size, importance_exponent)
            t = self.times.lap("replay_sample", t)
            stats, priorities = weighted_update(cfg, self.agent, self.codec, batch)
            if priorities is not None:
                self.replay.update_priorities(batch.index, priorities)
            self._loss_sum += float(stats.loss)
            self._q_sum += float(stats.mean_q)
            self._calls += 1
            self.times.lap("update", t)
        return k

    def take_stats(self) -> dict:
        """Mean loss and mean max Q of the update calls since the previous take_stats."""
        calls = self._calls
        stats = dict(loss=self._loss_sum / calls if calls else None,
                     mean_q=self._q_sum / calls if calls else None)
        self._loss_sum = self._q_sum = 0.0
        self._calls = 0
        return stats


class Evaluator:
    """DQN 3.0's evaluation (--eval-steps at --eval-ep on full games), best network kept."""

    def __init__(self, cfg: Config, agent, pool: EnvPool, *, log, times: PhaseTimes,
                 should_stop: Callable[[], bool]):
        self.cfg, self.agent, self.pool, self.log = cfg, agent, pool, log
        self.times, self.should_stop = times, should_stop

    def run(self, state: TrainerState, run_started: float) -> None:
        """Evaluate at state.step; updates state's evaluation fields. A stop request during
        it leaves state.eval_pending set, so that a resumed run evaluates again."""
        cfg, seed = self.cfg, derive_seed
        t = time.perf_counter()
        index = state.eval_index
        state.eval_pending = True
        result = evaluate(self.agent.q_values, self.pool, cfg.hist_len, epsilon=cfg.eval_ep,
                          rng=np.random.default_rng(seed(cfg.seed, 5, index)),
                          seeds=[seed(cfg.seed, 4, index, i) for i in range(cfg.eval_envs)],
                          steps=cfg.eval_steps, should_stop=self.should_stop)
        if result.aborted:
            return
        self.times.lap("eval", t)
        record_evaluation(cfg, state, self.agent.online, result.mean, self.log,
                          dict(result.record(), eval_seconds=time.perf_counter() - t,
                               run_seconds=time.time() - run_started))


def close_log(log, state: TrainerState, stop, program: str, run_dir: str, done: str) -> None:
    """A run's last message, then the log closed: after a stop request (SIGINT/SIGTERM) how
    to continue the run, else `done`."""
    if stop:
        log.message(f"stopped by {stop.signal_name} at step {state.step:,}; continue with: "
                    f"python python/{program} --resume {run_dir}")
    else:
        log.message(done)
    log.close()


def write_summary(log, state: TrainerState, epsilon: float, learner: Learner,
                  times: PhaseTimes, replay_size: int) -> None:
    """The periodic summary (metrics.jsonl, TensorBoard, the progress line), then a fresh
    start for the per-phase times and the update statistics it reports."""
    mean_return = float(np.mean(state.recent_scores)) if state.recent_scores else None
    paused = times.seconds.get("eval", 0.0) + times.seconds.get("checkpoint", 0.0)
    log.train(state.step, paused_seconds=paused, record=dict(
        epsilon=epsilon, **learner.take_stats(), updates=state.updates, games=state.games,
        replay_size=replay_size, mean_return=mean_return, **times.ms_per_call()))
    times.reset()  # each summary reports ms per call since the previous one
    recent = f" (last 100: {mean_return:.1f})" if mean_return is not None else ""
    log.progress(state.step, epsilon, force=True, newline=True,
                 extra=f"games {state.games}{recent}")


# ---- checkpoints --------------------------------------------------------------------------

def save_checkpoint(cfg: Config, state: TrainerState, agent, actor: Actor, *, log,
                    times: PhaseTimes) -> str:
    """Everything needed to continue the run bit for bit; returns the checkpoint directory
    (and says so on the console, with the time it took)."""
    t = time.perf_counter()
    python_version, python_words, python_gauss = random.getstate()
    saved = dict(state.to_dict(), next_q=actor.prefetched_q, envs=actor.pool.get_state(),
                 rng=actor.rng.bit_generator.state,
                 python_random=[python_version, list(python_words), python_gauss],
                 numpy_global=np.random.get_state(legacy=False))
    path = checkpoint.save(cfg.run_dir, state.step, agent, saved, actor.replay)
    seconds = times.lap("checkpoint", t) - t
    log.eta.checkpoint_took(seconds)
    log.message(f"checkpoint {path} ({seconds:.1f} s)")
    return path


def restore_checkpoint(path: str, agent, actor: Actor, replay_type) -> TrainerState:
    """Loads a checkpoint into agent and actor (its replay memory replaced by the saved one);
    returns the trainer state."""
    checkpoint.check_format(path)
    agent.read(checkpoint.agent_prefix(path))
    actor.replay = replay_type.load(checkpoint.replay_path(path))
    saved = checkpoint.load_trainer_state(path)
    actor.pool.set_state(saved.pop("envs"))
    actor.rng.bit_generator.state = saved.pop("rng")
    python_version, python_words, python_gauss = saved.pop("python_random")
    random.setstate((python_version, tuple(python_words), python_gauss))
    np.random.set_state(saved.pop("numpy_global"))
    actor.prefetched_q = saved.pop("next_q", None)
    return TrainerState.from_dict(saved)
