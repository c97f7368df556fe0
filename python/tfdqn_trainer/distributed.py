"""Ape-X-style distributed DQN on Ray Core (Horgan et al. 2018, "Distributed Prioritized
Experience Replay"): many actor processes feed one prioritized replay; one learner.

    ActorWorker (N Ray actors)   own environments; trainer.Actor's acting part at a fixed
                                 epsilon 0.4^(1 + 7 i / (N - 1)); every --send-every agent
                                 steps sends its streams' new entries (uint8 frames, one per
                                 transition) with the initial priorities of the transitions
                                 they complete, computed from its own Q-values; at most
                                 --max-in-flight sends outstanding (ray.wait).
    ReplayServer (K Ray actors)  --replay-shards prioritized n-step tfdqn_ops.ReplayMemory
                                 shards, actor i's streams in shard i % K (one stream per
                                 environment, add_stream); draws and priority updates for the
                                 learner, finished games for the logs. ShardedReplay makes
                                 them one memory for the learner (exact sampling by priority
                                 across shards, one memory's importance weights).
    ParameterServer              the newest weights as ONE object-store reference (ray.put
                                 by the learner every --weights-every updates); actors
                                 fetch it every --weights-poll agent steps.
    EvalWorker                   evaluations at --eval-ep with the learner's weights.
    learner (the driver)         python/apex.py: samples ahead, the op's importance-
                                 weighted update, new priorities, target copies.

docs/SCALING.md has the measured rates of one server and of K shards.
"""

import json
import os
import time
from collections import deque
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import ray

# An actor's TF uses one thread: the actors share the machine's cores.
_ACTOR_THREADS = 1


def apex_epsilon(index: int, num_actors: int, base: float = 0.4, alpha: float = 7.0) -> float:
    """Ape-X's per-actor exploration: base^(1 + alpha * i / (N - 1)); base for one actor."""
    if num_actors <= 1:
        return base
    return base ** (1.0 + alpha * index / (num_actors - 1))


def _import_tensorflow(threads: int):
    from tfdqn_trainer.quiet_tf import import_tensorflow
    tf = import_tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialized in this process
        pass
    return tf


def _config(cfg_json: str):
    from tfdqn_trainer import config as config_lib
    return config_lib.config_from_dict(json.loads(cfg_json))


# --------------------------------------------------------------------------------------------
# Priorities the actors compute


class StreamPriorities:
    """Initial priorities of one stream's n-step transitions, from the actor's own Q-values:
    |R + discount^m (1 - term) max_a Q(s_{t+m}) - Q(s_t, a_t)| + epsilon, with R and m as the
    replay memory forms them (the return stops after the first terminal entry). Entries come
    in the order they are added to the stream, each with Q of its state (the state whose
    newest frame is the entry)."""

    def __init__(self, n_step: int, discount: float, epsilon: float, first_sequence: int):
        self.n, self.discount, self.epsilon = n_step, discount, epsilon
        self.entries: deque = deque()  # (sequence, q_row, action, reward, terminal)
        self.next_sequence = first_sequence

    def add(self, q_row: np.ndarray, action: int, reward: float, terminal: bool) -> None:
        self.entries.append((self.next_sequence, q_row, int(action), float(reward),
                             bool(terminal)))
        self.next_sequence += 1

    def ready(self) -> Tuple[List[int], List[float]]:
        """(sequences, priorities) of the transitions whose n entries after them are in."""
        sequences, priorities = [], []
        while self.entries:
            first = self.entries[0]
            # Entries t .. t + n are needed unless a terminal comes earlier.
            ret, scale, m, ended = 0.0, 1.0, 0, False
            complete = False
            while m < self.n:
                if m + 1 >= len(self.entries):
                    break
                ret += scale * self.entries[m][3]
                scale *= self.discount
                ended = self.entries[m + 1][4]
                m += 1
                if ended:
                    break
            complete = ended or m == self.n
            if not complete:
                break
            self.entries.popleft()
            if first[4]:  # a terminal entry starts no transition
                continue
            bootstrap = 0.0 if ended else scale * float(np.max(self.entries[m - 1][1]))
            td = ret + bootstrap - float(first[1][first[2]])
            sequences.append(first[0])
            priorities.append(abs(td) + self.epsilon)
        return sequences, priorities


# --------------------------------------------------------------------------------------------
# Ray actors


class SampledBatch(NamedTuple):
    """ReplayMemory.sample_batch's ReplayBatch as plain data that Ray ships to the learner."""
    s: np.ndarray
    a: np.ndarray
    r: np.ndarray
    s2: np.ndarray
    term: np.ndarray
    discount: np.ndarray
    index: np.ndarray
    weight: np.ndarray


def shard_of(index: int, num_actors: int, num_shards: int) -> Tuple[int, int, int]:
    """(shard, position among the shard's actors, actors on that shard) of actor `index`:
    actor i feeds shard i % K, so a stream's histories and n-step returns stay in one
    memory and the shards get nearly equal numbers of streams."""
    shard = index % num_shards
    return shard, index // num_shards, len(range(shard, num_actors, num_shards))


@ray.remote
class ReplayServer:
    """A prioritized n-step replay memory (the whole replay, or one shard of it), one stream
    per environment of the actors that feed it.

    `incarnation` is new each time the process starts: Ray restarts a dead shard empty, and
    the sequence numbers and ids of the earlier process must not reach the new memory (they
    would name other transitions). Calls that carry an incarnation are ignored when it is not
    the current one."""

    def __init__(self, *, capacity: int, frame_shape: Sequence[int], history: int,
                 num_streams: int, seed: int, n_step: int, discount: float,
                 priority_exponent: float):
        from tfdqn_ops import ReplayMemory
        self.memory = ReplayMemory(capacity, tuple(frame_shape), history, num_streams, seed,
                                   n_step=n_step, discount=discount,
                                   priority_exponent=priority_exponent)
        self.incarnation = int.from_bytes(os.urandom(6), "little")
        self.received = 0
        self.updates = 0  # learner updates whose priorities came back
        self.games: List[Tuple[float, int]] = []

    def add(self, stream: int, frames, actions, rewards, terminals, sequences, priorities,
            games, incarnation: Optional[int] = None) -> Optional[Tuple[int, int]]:
        """A send of one actor stream: entries, then the initial priorities of the
        transitions they complete (ids from the stream's sequence numbers). Returns the
        counts an actor's rate limit needs, (agent steps received, learner updates), or None
        (nothing added) when `incarnation` is an earlier process's: the actor starts its
        streams again (ActorWorker._rejoin)."""
        if incarnation is not None and incarnation != self.incarnation:
            return None
        self.memory.add_stream(stream, frames, actions, rewards, terminals)
        if len(sequences):
            ids = np.asarray(sequences, np.int64) * self.memory.num_envs + stream
            self.memory.update_priorities(ids, np.asarray(priorities, np.float64))
        self.received += len(actions)
        self.games.extend(games)
        return self.received, self.updates

    def counts(self) -> Tuple[int, int]:
        return self.received, self.updates

    def stream_added(self, stream: int) -> int:
        return self.memory.stream_added(stream)

    def streams_start(self, streams: Sequence[int]) -> Tuple[int, List[int]]:
        """(incarnation, entries ever added to each stream): where an actor's streams go on."""
        return self.incarnation, [self.memory.stream_added(s) for s in streams]

    def sample(self, batch_size: int, importance_exponent: float):
        """One minibatch, or None while no transition can be drawn."""
        reply = self.sample_sizes([batch_size], importance_exponent)
        return reply["pieces"][0] if reply else None

    def sample_sizes(self, sizes: Sequence[int], importance_exponent: float):
        """Draws of sizes[0], sizes[1], ... transitions (0: none), one after the other by the
        priorities as they are now, in one call (a Ray round trip costs more than a small
        network's update, so the learner asks for several minibatches at a time; with
        shards, each is this shard's part of a minibatch). Returns dict(pieces, incarnation,
        total, min): the SampledBatch of each size (None for 0) and this shard's sum and
        smallest p^alpha; None while no transition can be drawn."""
        if self.memory.num_valid_windows == 0:
            return None
        pieces = [SampledBatch(*self.memory.sample_batch(n, importance_exponent)) if n else None
                  for n in sizes]
        return dict(pieces=pieces, **self._priority_state())

    def _priority_state(self) -> Dict[str, float]:
        return dict(incarnation=self.incarnation, total=self.memory.priority_total,
                    min=self.memory.priority_min)

    def update_priorities(self, ids, priorities) -> int:
        return self.update_priorities_many([(ids, priorities, None)])

    def update_priorities_many(self, updates) -> int:
        """The new priorities of several learner updates, [(ids, priorities, incarnation)],
        applied in order; those drawn from an earlier process (its incarnation) are dropped.
        Each counts as one learner update. Returns the learner updates so far."""
        for ids, priorities, incarnation in updates:
            if len(ids) and incarnation in (None, self.incarnation):
                self.memory.update_priorities(ids, priorities)
        self.updates += len(updates)
        return self.updates

    def stats(self) -> Dict[str, object]:
        games, self.games = self.games, []
        return dict(received=self.received, size=len(self.memory),
                    valid=self.memory.num_valid_windows, games=games, **self._priority_state())

    def save(self, path: str) -> None:
        self.memory.save(path)

    def where(self) -> Tuple[int, str]:
        """(process id, node id): for tests and tools."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def load(self, path: str, received: int, updates: int) -> None:
        """A checkpoint's memory, and the counts the actors' rate limit compares."""
        from tfdqn_ops import ReplayMemory
        self.memory = ReplayMemory.load(path)
        self.received, self.updates = received, updates


@ray.remote(num_cpus=0)
class ParameterServer:
    """The newest weights: a version number and one object-store reference."""

    def __init__(self):
        self.version, self.ref = -1, None

    def set(self, version: int, boxed_ref: list) -> None:
        # The reference arrives boxed in a list so that Ray hands over the reference, not
        # the arrays; keeping it here keeps the object alive for the actors.
        self.version, self.ref = version, boxed_ref[0]

    def latest(self) -> list:
        return [self.version, self.ref]  # boxed again: the caller fetches the arrays once


def _network(cfg):
    """(pool, q function, model) for cfg: the acting network of a worker."""
    from tfdqn_trainer.build import make_pool, network_factory
    from tfdqn_trainer import networks
    pool = make_pool(cfg, cfg.num_envs, training=True)
    _, spec, build = network_factory(cfg, pool)
    model = build()
    return pool, networks.compile_q(model, spec, jit_compile=cfg.jit_act), model


@ray.remote
class ActorWorker:
    """Acts in cfg.num_envs environments at a fixed epsilon and feeds the replay server."""

    def __init__(self, *, cfg_json: str, index: int, replay: str, params: str):
        """cfg_json: the run's Config as JSON (its Ape-X fields: --actors, --send-every,
        --max-in-flight, --weights-poll, --max-steps-per-update, --replay-shards); index:
        this actor's number (its epsilon, its shard, its streams); replay, params: the names
        of its ReplayServer (shard) and of the run's ParameterServer. Every argument is a
        plain value that Ray passes inline: handles among them would put the arguments in
        the object store, and Ray restarts an actor (max_restarts) from its constructor's
        arguments, which fails once those are gone (Ray's issue 53727, and its warning)."""
        _import_tensorflow(_ACTOR_THREADS)
        from tfdqn_ops import ReplayMemory
        from tfdqn_trainer import envs as envs_lib
        from tfdqn_trainer import trainer as trainer_lib
        from tfdqn_trainer.config import steps_per_update_limit

        cfg = _config(cfg_json)
        self.cfg, self.index = cfg, index
        self.replay, self.params = ray.get_actor(replay), ray.get_actor(params)
        self.send_every, self.max_in_flight = cfg.send_every, cfg.max_in_flight
        self.weights_poll = cfg.weights_poll
        _, position, on_shard = shard_of(index, cfg.actors, cfg.replay_shards)
        # The rate limit and learn_start hold for the actors together: a shard's actors
        # take their share of them.
        self.share = on_shard / cfg.actors
        self.max_steps_per_update = steps_per_update_limit(cfg)
        self.counts = (0, 0)  # (agent steps received, learner updates), as last reported
        self.pool, q, self.model = _network(cfg)
        self.version = -1
        self.epsilon = apex_epsilon(index, cfg.actors)
        n = len(self.pool)
        self.streams = [position * n + j for j in range(n)]  # the shard's stream numbers
        # The frame stack the actor acts on (nothing is sampled from it).
        self.stack = ReplayMemory(n * (cfg.hist_len + 1), self.pool.codec.frame_shape,
                                  cfg.hist_len, n)
        self.outbox = [dict(frames=[], actions=[], rewards=[], terminals=[]) for _ in range(n)]
        self.games: List[Tuple[float, int]] = []
        self.in_flight: List = []
        self.rejoins = 0  # times its shard was restarted under it
        seed = envs_lib.derive_seed
        restarted = [added > 0 for added in self._start_streams()]
        self.pool.reset([seed(cfg.seed, 10, index, j, int(time.time() * 1e3) % 2**31
                              if any(restarted) else 0) for j in range(n)])
        self._cut_restarted_streams(restarted)
        # The actor writes into the local frame stack (its histories) and tells collect()
        # what to send; Ape-X's epsilon is fixed per actor.
        self.actor = trainer_lib.Actor(cfg, self.pool, self.stack, q,
                                       epsilon=lambda step: self.epsilon, on_step=self.collect,
                                       times=trainer_lib.PhaseTimes(),
                                       rng=np.random.default_rng(seed(cfg.seed, 11, index)))
        self.q = q
        self.steps = 0
        self._pull_weights()

    def _start_streams(self) -> List[int]:
        """The shard's incarnation and where each stream goes on (its entries so far), the
        stream priorities numbered from there; waits while Ray restarts the shard."""
        while True:
            try:
                self.incarnation, added = ray.get(self.replay.streams_start.remote(self.streams))
                break
            except ray.exceptions.RayActorError:
                time.sleep(0.5)
        self.priorities = [StreamPriorities(self.cfg.n_step, self.cfg.discount,
                                            self.cfg.priority_epsilon, a) for a in added]
        return added

    def _rejoin(self) -> None:
        """Its shard was restarted (empty): what was in flight or waiting is dropped, and the
        streams start again in the new memory from the next step on (its first entries
        only give histories, as at any stream's start)."""
        self.rejoins += 1
        self.in_flight = []
        for box in self.outbox:
            for key in box:
                box[key] = []
        self._start_streams()
        self.counts = (0, 0)

    def collect(self, frames, actions, rewards, terminals, q) -> None:
        """trainer.Actor's on_step: one step's transitions into the outbox, with the Q rows
        they were acted on for their initial priorities (run() always computes Q)."""
        for j, box in enumerate(self.outbox):
            box["frames"].append(frames[j])
            box["actions"].append(int(actions[j]))
            box["rewards"].append(float(rewards[j]))
            box["terminals"].append(bool(terminals[j]))
            self.priorities[j].add(q[j], actions[j], rewards[j], terminals[j])

    # -- the loop -------------------------------------------------------------------------------
    def _cut_restarted_streams(self, restarted: Sequence[bool]) -> None:
        """A restarted actor continues its streams with a new game: one zero terminal entry
        first, so that no history or return joins the lost game to the new one."""
        frame_shape = self.pool.codec.frame_shape
        for j, stream in enumerate(self.streams):
            if restarted[j]:
                ray.get(self.replay.add.remote(stream, np.zeros((1,) + frame_shape, np.uint8),
                                               [0], [0.0], [True], [], [], [],
                                               self.incarnation))
                self.priorities[j].next_sequence += 1

    def _pull_weights(self) -> None:
        version, ref = ray.get(self.params.latest.remote())
        if ref is not None and version != self.version:
            self.model.set_weights(ray.get(ref))
            self.version = version

    def _send(self) -> None:
        for j, box in enumerate(self.outbox):
            if not box["actions"]:
                continue
            sequences, priorities = self.priorities[j].ready()
            games = self.games if j == 0 else []
            self.in_flight.append(self.replay.add.remote(
                self.streams[j], np.stack(box["frames"]), np.asarray(box["actions"]),
                np.asarray(box["rewards"], np.float32), np.asarray(box["terminals"]),
                sequences, priorities, list(games), self.incarnation))
            for key in box:
                box[key] = []
            if j == 0:
                self.games = []
        done, self.in_flight = ray.wait(self.in_flight, num_returns=len(self.in_flight),
                                        timeout=0)
        while len(self.in_flight) > self.max_in_flight:  # back-pressure
            finished, self.in_flight = ray.wait(self.in_flight, num_returns=1)
            done += finished
        if done and not self._take_counts(done):
            self._rejoin()
            return
        self._wait_for_the_learner()

    def _take_counts(self, done: List) -> bool:
        """The newest counts among finished sends; False if the shard was restarted under
        them (a send failed, or reached the new process with the old numbering)."""
        for ref in done:
            try:
                counts = ray.get(ref)
            except ray.exceptions.RayActorError:
                return False
            if counts is None:
                return False
            self.counts = max(self.counts, tuple(counts))
        return True

    # How long a held actor sleeps between asking its shard for the counts: the updates it
    # still waits for at the learner's rate seen across its asks, within these bounds. (A
    # fixed 10 ms made a held actor ask ~100 times a second, calls that took the server's
    # and the cores' time from the learner it waited for.)
    WAIT_MIN_S, WAIT_MAX_S = 0.005, 0.25

    def _wait_for_the_learner(self) -> None:
        """The rate limit (--max-steps-per-update R): once learning has started, the actors
        together run at most R agent steps ahead per learner update (a shard's actors: their
        share of both)."""
        limit = self.max_steps_per_update
        if limit <= 0:
            return
        asked, rate = None, None  # (time, updates) of the last ask; updates/s seen
        while True:
            received, updates = self.counts
            if (received <= self.cfg.learn_start * self.share
                    or received <= limit * self.share * (updates + 1)):
                return
            now = time.monotonic()
            if asked is not None and updates > asked[1] and now > asked[0]:
                rate = (updates - asked[1]) / (now - asked[0])
            asked = (now, updates)
            missing = received / (limit * self.share) - (updates + 1)
            time.sleep(self.WAIT_MIN_S * 2 if rate is None else
                       min(self.WAIT_MAX_S, max(self.WAIT_MIN_S, missing / rate)))
            try:
                self.counts = ray.get(self.replay.counts.remote())
            except ray.exceptions.RayActorError:
                self._rejoin()
                return

    def run(self, max_steps: Optional[int] = None) -> int:
        """Acts until stopped (or max_steps agent steps, for tests); returns its steps."""
        target = None if max_steps is None else self.steps + max_steps
        while target is None or self.steps < target:
            result = self.actor.act(self.steps, q=self.q(self.actor.states()))
            self.games.extend(result.finished)
            before = self.steps
            self.steps += len(self.pool)
            if self.steps // self.send_every > before // self.send_every:
                self._send()
            if self.steps // self.weights_poll > before // self.weights_poll:
                self._pull_weights()
        self._send()
        if not self._take_counts(self.in_flight):
            self._rejoin()
        self.in_flight = []
        return self.steps

    def where(self) -> Tuple[int, str]:
        """(process id, node id): for tests and tools."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def rejoined(self) -> int:
        """How many times its shard was restarted under it (for tests and tools)."""
        return self.rejoins


@ray.remote
class EvalWorker:
    """Evaluations at --eval-ep on environments of its own, with given weights."""

    def __init__(self, cfg_json: str):
        _import_tensorflow(_ACTOR_THREADS)
        from tfdqn_trainer.build import make_pool, network_factory
        from tfdqn_trainer import networks
        cfg = _config(cfg_json)
        self.cfg = cfg
        self.pool = make_pool(cfg, cfg.eval_envs, training=False)
        _, spec, build = network_factory(cfg, self.pool)
        self.model = build()
        self.q = networks.compile_q(self.model, spec, jit_compile=cfg.jit_act)

    def evaluate(self, boxed_ref: list, index: int) -> dict:
        from tfdqn_trainer.envs import derive_seed as seed
        from tfdqn_trainer.evaluation import evaluate
        cfg = self.cfg
        self.model.set_weights(ray.get(boxed_ref[0]))
        result = evaluate(self.q, self.pool, cfg.hist_len, epsilon=cfg.eval_ep,
                          rng=np.random.default_rng(seed(cfg.seed, 5, index)),
                          seeds=[seed(cfg.seed, 4, index, i) for i in range(cfg.eval_envs)],
                          steps=cfg.eval_steps)
        return result.record()


# --------------------------------------------------------------------------------------------
# The learner's side (the apex command's process)


class ActorStartError(RuntimeError):
    """An actor worker's constructor raised: restarting it would fail the same way."""


def _raise_if_it_cannot_start(index: int, error: Exception) -> None:
    """ActorStartError when Ray says the actor's constructor raised (so will every restart)."""
    if "creation task" in str(error):
        raise ActorStartError(f"Ape-X actor {index} cannot start: {error}") from error


class Cluster:
    """A run's Ray actors as the learner sees them: the --replay-shards replay servers, the
    parameter server and the evaluator on the learner's node (the shards anywhere with
    --replay-anywhere), and --actors actor workers anywhere."""

    RESTART_POLL_S = 0.5  # how often an actor that Ray is restarting is asked if it is back

    def __init__(self, cfg, cfg_json: str, frame_shape, seed: int):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        # The replay, the parameter server and the evaluator ask for no CPU and stay on this
        # node (the learner pulls a minibatch of frames from the replay for every update):
        # Ray counts CPUs to place work, and the actors (one CPU each) should spread.
        here = dict(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False))
        self.cfg, self.cfg_json = cfg, cfg_json
        # Named (apex-<role>-<run token>): the actor workers look the servers up by name,
        # and tools and tests find every actor of a run.
        self.token = os.urandom(4).hex()
        shards = cfg.replay_shards
        self.replay_names = [f"apex-replay-{self.token}-{k}" for k in range(shards)]
        self.params_name = f"apex-params-{self.token}"
        servers = []
        for k, name in enumerate(self.replay_names):
            on_shard = shard_of(k, cfg.actors, shards)[2]
            # A dead shard is restarted empty (max_restarts): see ShardedReplay.
            servers.append(ReplayServer.options(
                name=name, max_restarts=-1, **(dict(num_cpus=0) if cfg.replay_anywhere
                                               else here)).remote(
                capacity=cfg.replay_memory * on_shard // cfg.actors, frame_shape=frame_shape,
                history=cfg.hist_len, num_streams=on_shard * cfg.num_envs, seed=seed + k,
                n_step=cfg.n_step, discount=cfg.discount,
                priority_exponent=cfg.priority_exponent))
        self.replay = ShardedReplay(servers, seed)
        self.params = ParameterServer.options(name=self.params_name, **here).remote()
        self.evaluator = EvalWorker.options(**here).remote(cfg_json) if cfg.eval_freq else None
        self.version = 0
        self.workers: List = []
        self.running: Dict = {}  # run() call -> actor index
        self.restarting: Dict = {}  # actor index -> (where() call, when it was made)

    def publish(self, weights, version: Optional[int] = None) -> None:
        """The learner's weights for the actors (one ray.put, fetched by each actor)."""
        self.version = self.version + 1 if version is None else version
        ray.get(self.params.set.remote(self.version, [ray.put(weights)]))

    def start_actors(self) -> None:
        # max_concurrency 2: run() never returns, and where() must still be answerable.
        self.workers = [ActorWorker.options(
            num_cpus=1, max_restarts=-1, max_concurrency=2, name=f"apex-actor-{i}-{self.token}"
        ).remote(cfg_json=self.cfg_json, index=i,
                 replay=self.replay_names[shard_of(i, self.cfg.actors, len(self.replay_names))[0]],
                 params=self.params_name)
            for i in range(self.cfg.actors)]
        self.running = {w.run.remote(): i for i, w in enumerate(self.workers)}

    def restart_stopped_actors(self) -> List[Tuple[int, str]]:
        """Actors whose loop ended: Ray restarts a dead actor's process (max_restarts), and
        its loop starts again once the new process answers. Returns (index, what stopped it)
        once per death: calls made while Ray is still restarting the process fail too, so
        a stopped actor is asked where() (a cheap call), at most every RESTART_POLL_S, until
        it answers, and only then is its loop started again."""
        stopped = []
        done, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        for ref in done:
            i = self.running.pop(ref)
            try:
                ray.get(ref)  # run() returns only when stopped
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                _raise_if_it_cannot_start(i, e)
                stopped.append((i, type(e).__name__))
            self.restarting[i] = (self.workers[i].where.remote(), time.time())
        for i, (ref, asked) in list(self.restarting.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as e:  # not back yet: ask again later
                _raise_if_it_cannot_start(i, e)
                if time.time() - asked >= self.RESTART_POLL_S:
                    self.restarting[i] = (self.workers[i].where.remote(), time.time())
                continue
            del self.restarting[i]
            self.running[self.workers[i].run.remote()] = i
        return stopped

    def stop_actors(self) -> None:
        """The actors stop adding (before the last checkpoint is saved)."""
        for worker in self.workers:
            ray.kill(worker)
        self.workers, self.running, self.restarting = [], {}, {}

    def shutdown(self) -> None:
        """The servers and the evaluator go too (the actors: stop_actors)."""
        self.stop_actors()
        for handle in self.replay.servers + [self.params, self.evaluator]:
            if handle is not None:
                ray.kill(handle)


# A minibatch as the learner uses it: SampledBatch's fields, `index` the ids of the sharded
# replay (shard id * K + shard), `weight` as one memory of all shards gives it, and the
# incarnation of each shard it was drawn from (the priorities go back with them).
LearnerBatch = NamedTuple("LearnerBatch", [(name, np.ndarray) for name in SampledBatch._fields]
                          + [("incarnations", Tuple)])


class ShardedReplay:
    """The K replay servers (shards) as the learner sees them: one prioritized memory.

    Sampling is exactly that of one memory of all transitions: each draw of a minibatch goes
    to shard k with probability T_k / sum(T), T_k the shard's sum of p^alpha (a multinomial
    split of the batch), and within the shard with p_i^alpha / T_k (its sum tree), so
    transition i is drawn with p_i^alpha / sum(T). The totals are those the shards reported
    last (with their previous minibatches and their stats, a few times a second), as a
    single memory's priorities are a few updates stale in Ape-X anyway; for a memory that
    does not change between calls the draws are exact (tests/test_apex_shards.py).

    Importance weights: a shard weights its draws (N_k P_k(i))^-beta / (N_k P_k(min))^-beta
    = (q_i / m_k)^-beta, q = p^alpha and m_k its smallest q. Scaled by (m / m_k)^beta, m the
    smallest q of all shards, they are (q_i / m)^-beta = (N P(i))^-beta / (N P(min))^-beta,
    the weights of one memory of all N transitions ("memory" normalisation; N and sum(T)
    cancel); "batch" normalisation then divides by the batch's largest, where m cancels too.
    With one shard nothing is rescaled.

    A dead shard is restarted by Ray, empty (its checkpoint would hold transitions whose
    stream numbering the actors have moved past, and a fresh shard costs at most 1/K of the
    memory, which its actors refill): its calls fail or answer with a new incarnation, its
    minibatches and priorities of the old process are dropped, its total is 0 until it
    reports again, and the agent steps it had counted stay counted."""

    def __init__(self, servers: List, seed: int):
        self.servers, self.k = list(servers), len(servers)
        self.rng = np.random.default_rng(seed)
        self.totals = np.zeros(self.k)
        self.mins = np.full(self.k, np.inf)
        self.incarnations: List[Optional[int]] = [None] * self.k
        # Incarnations replaced by a newer process: replies of theirs still in flight (a call
        # answered before the death, collected after the new process answered) are stale.
        self.retired: List[set] = [set() for _ in range(self.k)]
        self.received = [0] * self.k  # per shard, as last reported by its process
        self.lost_received = [0] * self.k  # counted by earlier processes of the shard
        self.updates = 0  # learner updates whose priorities were sent (to every shard)
        self.restarted: List[int] = []  # shards found restarted, not yet reported

    # -- what the shards report --------------------------------------------------------------
    def _note(self, k: int, reply: dict) -> bool:
        """A shard's reply (incarnation, total, min); False if it is stale (from a process
        already replaced) or the first from a new process."""
        incarnation = reply["incarnation"]
        if incarnation in self.retired[k]:
            return False
        same = self.incarnations[k] in (None, incarnation)
        if not same:
            self._lost(k)
        self.incarnations[k] = incarnation
        self.totals[k], self.mins[k] = reply["total"], reply["min"]
        return same

    def _failed(self, k: int, asked: Optional[int]) -> None:
        """A call to shard k made while its process was `asked` (an incarnation) failed: the
        process died, unless a newer one has answered since."""
        if self.incarnations[k] == asked:
            self._lost(k)

    def _lost(self, k: int) -> None:
        """Shard k's process died (a failed call) or was replaced (a new incarnation)."""
        if self.incarnations[k] is not None:
            self.restarted.append(k)
            self.retired[k].add(self.incarnations[k])
            self.lost_received[k] += self.received[k]
        self.incarnations[k], self.received[k] = None, 0
        self.totals[k], self.mins[k] = 0.0, np.inf

    def take_restarts(self) -> List[int]:
        """The shards found restarted since the last call."""
        restarted, self.restarted = self.restarted, []
        return restarted

    def stats(self) -> Dict[str, object]:
        """Every shard's stats together: agent steps received (all processes), entries,
        valid transitions, finished games. A shard that does not answer counts as empty."""
        refs = [server.stats.remote() for server in self.servers]
        asked = list(self.incarnations)
        size = valid = 0
        games: List = []
        for k, ref in enumerate(refs):
            try:
                reply = ray.get(ref)
            except ray.exceptions.RayActorError:
                self._failed(k, asked[k])
                continue
            games += reply["games"]  # finished games count whichever process saw them
            if reply["incarnation"] in self.retired[k]:
                continue  # a replaced process's counts
            self._note(k, reply)
            self.received[k] = reply["received"]
            size, valid = size + reply["size"], valid + reply["valid"]
        return dict(received=self.total_received(), size=size, valid=valid, games=games)

    def total_received(self) -> int:
        return sum(self.received_per_shard())

    # -- minibatches -------------------------------------------------------------------------
    def request(self, count: int, batch_size: int, importance_exponent: float):
        """Asks the shards for `count` minibatches of batch_size (collect() returns them);
        None while no shard has a transition to draw."""
        if self.k == 1:  # no split: sample_sizes' draws are exactly one memory's
            split = np.full((count, 1), batch_size)
        elif self.totals.sum() > 0:
            split = self.rng.multinomial(batch_size, self.totals / self.totals.sum(), count)
        else:
            return None
        refs = [server.sample_sizes.remote(split[:, k].tolist(), importance_exponent)
                if split[:, k].any() else None for k, server in enumerate(self.servers)]
        return split, refs, importance_exponent, list(self.incarnations)

    def collect(self, request) -> List[LearnerBatch]:
        """The minibatches of a request(); [] if a shard had nothing to draw, failed or was
        restarted meanwhile (the request's draws are dropped: its split no longer holds)."""
        if request is None:
            return []
        split, refs, beta, asked = request
        replies, complete = {}, True
        for k, ref in enumerate(refs):
            if ref is None:
                continue
            try:
                reply = ray.get(ref)
            except ray.exceptions.RayActorError:
                self._failed(k, asked[k])
                complete = False
                continue
            if reply is None or not self._note(k, reply):
                complete = False
                continue
            replies[k] = reply
        if not complete:
            return []
        smallest = float(np.min(self.mins))
        batches = []
        for b in range(len(split)):
            parts = [(k, replies[k]["pieces"][b]) for k in replies if split[b, k] > 0]
            fields = {}
            for name in SampledBatch._fields:
                columns = [getattr(piece, name) for _, piece in parts]
                if name == "index":
                    columns = [piece.index * self.k + k for k, piece in parts]
                elif name == "weight" and self.k > 1:
                    columns = [(piece.weight * (smallest / self.mins[k]) ** beta)
                               .astype(np.float32) for k, piece in parts]
                fields[name] = columns[0] if len(columns) == 1 else np.concatenate(columns)
            batches.append(LearnerBatch(**fields, incarnations=tuple(
                replies[k]["incarnation"] if k in replies else None for k in range(self.k))))
        return batches

    def send_priorities(self, updates: List[Tuple]) -> List:
        """New priorities of learner updates, [(LearnerBatch.index, priorities, its
        incarnations)], each shard its own ids (every shard hears of every update: the
        actors' rate limit counts them). Returns the calls in flight."""
        self.updates += len(updates)
        calls = []
        for k, server in enumerate(self.servers):
            mine = []
            for ids, priorities, incarnations in updates:
                ours = ids % self.k == k
                mine.append((ids[ours] // self.k, np.asarray(priorities)[ours],
                             incarnations[k]))
            calls.append(server.update_priorities_many.remote(mine))
        return calls

    # -- checkpoints ---------------------------------------------------------------------------
    def received_per_shard(self) -> List[int]:
        """The agent steps each shard received (all its processes): its counts on --resume."""
        return [self.received[k] + self.lost_received[k] for k in range(self.k)]

    def save(self, directory: str) -> None:
        """Each shard's memory into its file of a checkpoint directory."""
        from tfdqn_trainer import checkpoint
        ray.get([server.save.remote(checkpoint.replay_path(directory, k))
                 for k, server in enumerate(self.servers)])

    def load(self, directory: str, received: Sequence[int], updates: int) -> None:
        from tfdqn_trainer import checkpoint
        ray.get([server.load.remote(checkpoint.replay_path(directory, k), int(received[k]),
                                    updates) for k, server in enumerate(self.servers)])
        self.received, self.lost_received = list(received), [0] * self.k
        self.updates = updates


class RemoteLearning:
    """The learner's loop over the replay shards: minibatches asked for --sample-batches at
    a time with the next request already in flight while it learns, one weighted update per
    minibatch, the new priorities sent back --sample-batches updates at a time (at most 4
    sends outstanding), the target copied every --target-q / --update-freq updates (Ape-X's
    2,500 with DQN 3.0's numbers) and the weights published every --weights-every."""

    def __init__(self, cfg, agent, codec, cluster: Cluster):
        self.cfg, self.agent, self.codec, self.cluster = cfg, agent, codec, cluster
        self.copy_every = max(1, cfg.target_q // cfg.update_freq)
        self.per_call = cfg.sample_batches
        self.sampling: List = []  # requests in flight
        self.batches: deque = deque()  # sampled, not yet learned from
        self.new_priorities: List = []  # [(ids, priorities, incarnations)] not yet sent
        self.priority_sends: List = []  # update_priorities_many calls in flight

    def update(self, state) -> None:
        """One update, if the replay had a batch; counts it in state.updates."""
        from tfdqn_trainer.trainer import importance_exponent, weighted_update
        cfg, replay = self.cfg, self.cluster.replay
        while len(self.sampling) < 2:
            self.sampling.append(replay.request(
                self.per_call, cfg.minibatch_size, importance_exponent(cfg, state.step)))
        if not self.batches:
            self.batches.extend(replay.collect(self.sampling.pop(0)))
            if not self.batches:  # the replay has nothing to draw yet
                return
        batch = self.batches.popleft()
        _, priorities = weighted_update(cfg, self.agent, self.codec, batch)
        self.new_priorities.append((batch.index, priorities, batch.incarnations))
        if len(self.new_priorities) >= self.per_call:
            self.send_priorities()
        state.updates += 1
        if state.updates % self.copy_every == 0:
            self.agent.copy_target()
        if state.updates % cfg.weights_every == 0:
            self.cluster.publish(self.agent.online.get_weights())

    def send_priorities(self) -> None:
        """The priorities not yet sent, in one call per shard (also before a checkpoint)."""
        if self.new_priorities:
            self.priority_sends += self.cluster.replay.send_priorities(self.new_priorities)
            self.new_priorities = []
        most = 4 * self.cluster.replay.k
        if len(self.priority_sends) > most:
            _, self.priority_sends = ray.wait(self.priority_sends,
                                              num_returns=len(self.priority_sends) - most)

    def wait_for_priorities(self) -> None:
        """Every priority sent and applied (a checkpoint then holds them); a shard that
        died meanwhile lost them anyway."""
        self.send_priorities()
        for ref in self.priority_sends:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                pass
        self.priority_sends = []


class RemoteEvaluations:
    """Evaluations on the cluster's evaluator, one at a time, while the learner goes on; the
    network an evaluation played is what becomes the best network."""

    def __init__(self, cfg, cluster: Cluster, played):
        self.cfg, self.cluster, self.played = cfg, cluster, played  # played: a Keras model
        self.pending = None  # (result reference, the weights it plays, the step they are from)

    def start(self, state, weights) -> None:
        if self.cluster.evaluator is None or self.pending is not None:
            return
        self.pending = (self.cluster.evaluator.evaluate.remote([ray.put(weights)],
                                                               state.eval_index),
                        weights, state.step)

    def collect(self, state, log, run_started: float, wait: bool = False) -> None:
        """A finished evaluation into the state and the log (and the best network); with
        `wait`, the one under way is waited for (the run's last, started at its step budget).
        The record's step is the run's step when it finished (the learner went on meanwhile);
        `weights_step` is the step of the network it played."""
        from tfdqn_trainer.trainer import record_evaluation
        if self.pending is None or not ray.wait([self.pending[0]],
                                                timeout=None if wait else 0)[0]:
            return
        ref, weights, weights_step = self.pending
        record = ray.get(ref)
        self.played.set_weights(weights)
        self.pending = None
        record_evaluation(self.cfg, state, self.played, record["eval_mean_score"], log,
                          dict(record, weights_step=weights_step,
                               run_seconds=time.time() - run_started))
