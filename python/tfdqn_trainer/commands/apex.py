"""Ape-X on Ray: N actor processes, one prioritized n-step replay, one learner (this process).
The parts are in python/tfdqn_trainer/distributed.py.

    python python/apex.py --preset classic --env CartPole-v1 --actors 2   # Ray on this machine
    ray start --head                                        # on one machine of a cluster
    ray start --address=HEAD_IP:6379                        # on each of the others
    python python/apex.py --ray-address auto --actors 16 ...  # on a machine of the cluster

Flags mean what they mean in train.py (see `python python/train.py --help`), with these
differences: --steps counts the agent steps of all actors together; --num-envs is per
actor; --learn-start is the number of transitions in the replay before learning starts;
the target network is copied every --target-q / --update-freq learner updates (DQN 3.0's
10,000 / 4 = 2,500, Ape-X's figure); sampling is always prioritized (--priority-exponent,
--importance-exponent rising to 1 at --steps, --priority-epsilon,
--importance-normalization; --no-prioritized is refused); --ep-* do not apply and are
refused (actor i explores at 0.4^(1 + 7 i / (N - 1))). Its own flags, fields of the same
Config (so config.json holds them; train.py refuses them): --actors, --ray-address,
--send-every, --max-in-flight, --weights-every, --weights-poll, --max-steps-per-update,
--sample-batches, --replay-shards, --replay-anywhere. The replay's room is checked per
stream, --actors x --num-envs of them, before Ray starts.

Exit codes: 0 finished, or stopped by SIGINT/SIGTERM after saving a checkpoint; 1 an actor
cannot start (its constructor raised); 2 bad input.
"""

import json
import os
import socket
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfdqn_trainer import checkpoint  # noqa: E402
from tfdqn_trainer import config as config_lib  # noqa: E402
from tfdqn_trainer.config import Config, ConfigError  # noqa: E402
from tfdqn_trainer.stop_request import StopRequest  # noqa: E402

PROG = config_lib.program_name("apex.py")


def parse(argv=None) -> Config:
    """The run's Config from the command line, or ConfigError. Ape-X's own settings
    (--actors, --ray-address, ...) are fields of the one Config, so config.json holds them
    and --resume reads them back."""
    cfg, explicit = config_lib.parse_args(argv, prog=PROG, description=__doc__.split("\n\n")[0])
    for name, why in config_lib.NOT_UNDER_APEX.items():
        if name in explicit:
            raise ConfigError(f"{config_lib.flag(name)} does not apply under Ape-X: {why}")
    if explicit.get("prioritized") is False:
        raise ConfigError("--no-prioritized: Ape-X always samples by priority (its actors send "
                          "each transition's initial priority); train.py replays uniformly")
    if cfg.resume:
        cfg = config_lib.resume_config(cfg.resume, explicit)
        path = checkpoint.latest(cfg.resume)
        if path is None:
            raise ConfigError(f"--resume {cfg.resume!r} has no complete checkpoint")
        try:
            checkpoint.check_format(path)
        except checkpoint.CheckpointFormatError as e:
            raise ConfigError(f"--resume: {e}") from None
        saved_shards = checkpoint.replay_shards(path)
        if saved_shards != cfg.replay_shards:
            raise ConfigError(f"--resume {cfg.resume!r}: its checkpoint {path} holds "
                              f"{saved_shards} replay shard(s) but the run's config has "
                              f"--replay-shards {cfg.replay_shards}; a run resumes with the "
                              "shards it saved")
    cfg.prioritized = True  # Ape-X's replay (--prioritized's help says so; config.json too)
    config_lib.validate(cfg, distributed=True)
    if cfg.ray_address not in (None, "auto"):
        check_reachable(cfg.ray_address)
    config_lib.settle_run_dir(cfg, prefix="apex-")
    return cfg


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT that nothing answers at is refused in seconds (ray.init would wait)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected 'auto' or HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(f"--ray-address {address!r}: no Ray cluster answers there ({e}); "
                          "start one with `ray start --head`") from None


class ReplayProxy:
    """What checkpoint.save needs of a replay memory, for the replay shards: each writes its
    file into the checkpoint's directory."""

    def __init__(self, replay):
        self.replay = replay

    def save(self, path: str) -> None:
        self.replay.save(os.path.dirname(path))


def start_ray(cfg):
    """Joins the given cluster, or starts Ray here with a bounded object store. Returns
    whether this process started it (and so must shut it down)."""
    import ray
    if ray.is_initialized():
        return False
    # Workers import the installed packages (from a checkout's root too: Ray puts the driver's
    # current directory on their paths, and tfdqn_ops's source tree then takes its compiled
    # parts from the installed copy).
    kwargs = dict(include_dashboard=False, log_to_driver=False,
                  runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}})
    if cfg.ray_address is None:
        # Logical CPUs: every actor gets one, whatever the machine has (they share its cores
        # with the replay server, the evaluator and the learner, this process).
        kwargs.update(num_cpus=max(os.cpu_count() or 1, cfg.actors),
                      object_store_memory=min(2 << 30, max(256 << 20,
                                                           cfg.replay_memory * 64)))
    else:
        kwargs["address"] = cfg.ray_address
    ray.init(**kwargs)
    return True


def restore(cfg, agent, cluster):
    """--resume: the networks, optimizer, replay and counters of the run's latest checkpoint.
    Returns (TrainerState, the next weights version to publish)."""
    from tfdqn_trainer.logger import truncate_metrics
    from tfdqn_trainer.trainer import TrainerState
    path = checkpoint.latest(cfg.run_dir)
    agent.read(checkpoint.agent_prefix(path))
    saved = checkpoint.load_trainer_state(path)
    state = TrainerState.from_dict(saved["trainer"])
    # Each shard's agent steps (checkpoints before shards: one replay, all of them), and the
    # learner's updates, which every shard has counted: the actors' rate limit compares them.
    cluster.replay.load(path, saved.get("replay_received", [state.step]), state.updates)
    truncate_metrics(cfg.run_dir, state.step)
    print(f"resuming {cfg.run_dir} from step {state.step:,} ({path})", flush=True)
    return state, saved["version"] + 1


class Rate:
    """Events per second of wall time between calls (the learner's updates/s)."""

    def __init__(self, count: int):
        self.count, self.time = count, time.time()

    def __call__(self, count: int) -> float:
        now = time.time()
        rate = (count - self.count) / max(now - self.time, 1e-9)
        self.count, self.time = count, now
        return rate


def report(log, state, updates_per_s: float, replay_size: int, restarts: dict) -> None:
    """The progress line and the metrics.jsonl 'train' record (restarts: actor_restarts,
    shard_restarts)."""
    import numpy as np
    mean_return = float(np.mean(state.recent_scores)) if state.recent_scores else None
    log.train(state.step, record=dict(updates=state.updates, games=state.games,
                                      mean_return=mean_return, updates_per_s=updates_per_s,
                                      replay_size=replay_size, **restarts))
    recent = f" (last 100: {mean_return:.1f})" if mean_return is not None else ""
    log.progress(state.step, None, force=True, newline=True,
                 extra=f"{updates_per_s:,.0f} updates/s | games {state.games}{recent}")


def main(argv=None) -> int:
    try:
        cfg = parse(argv)
    except ConfigError as e:
        config_lib.fail(str(e), prog=PROG)

    from tfdqn_trainer.quiet_tf import import_tensorflow
    import_tensorflow()
    import ray

    from tfdqn_trainer import distributed
    from tfdqn_trainer.build import make_agent, make_pool, network_factory
    from tfdqn_trainer.envs import derive_seed as seed
    from tfdqn_trainer.logger import EtaEstimator, RunLogger
    from tfdqn_trainer.trainer import TrainerState, close_log, crossed, stop_score_reached

    try:
        started_ray = start_ray(cfg)
    except (ConnectionError, RuntimeError, ValueError) as e:
        config_lib.fail(f"--ray-address {cfg.ray_address!r}: {e}", prog=PROG)
    stop = StopRequest()
    cfg_json = json.dumps(json.loads(config_lib.config_to_json(cfg)))
    probe = make_pool(cfg, 1, training=True)  # the observation and action spaces
    codec = probe.codec
    _, agent = make_agent(cfg, probe)
    played = network_factory(cfg, probe)[2]()  # holds the weights an evaluation played
    probe.close()
    cluster = distributed.Cluster(cfg, cfg_json, codec.frame_shape, seed(cfg.seed, 3))
    os.makedirs(cfg.run_dir, exist_ok=True)
    checkpoint.write_json_atomic(os.path.join(cfg.run_dir, "config.json"),
                                 config_lib.config_to_json(cfg))
    state, version = restore(cfg, agent, cluster) if cfg.resume else (TrainerState(), None)
    cluster.publish(agent.online.get_weights(), version)
    cluster.start_actors()
    learning = distributed.RemoteLearning(cfg, agent, codec, cluster)
    evaluations = distributed.RemoteEvaluations(cfg, cluster, played)
    log = RunLogger(cfg.run_dir, cfg.steps, state.step,
                    eta=EtaEstimator(cfg.steps, learn_start=cfg.learn_start,
                                     eval_freq=cfg.eval_freq, save_freq=cfg.save_freq))
    print(f"Ape-X on Ray: {cfg.actors} actors x {cfg.num_envs} envs of {cfg.env}, replay "
          f"{cfg.replay_memory:,}, n-step {cfg.n_step}, prioritized; run dir {cfg.run_dir}",
          flush=True)

    started = time.time() - state.train_seconds
    updates_per_s = Rate(state.updates)
    restarts = dict(actor_restarts=0, shard_restarts=0)
    last_ask, stats = 0.0, dict(received=state.step, size=0, valid=0, games=[])

    def save() -> None:
        t = time.perf_counter()
        learning.wait_for_priorities()  # the saved replay holds every update's priorities
        path = checkpoint.save(cfg.run_dir, state.step, agent,
                               dict(trainer=state.to_dict(), version=cluster.version,
                                    replay_received=cluster.replay.received_per_shard()),
                               ReplayProxy(cluster.replay))
        log.eta.checkpoint_took(time.perf_counter() - t)
        log.message(f"checkpoint {path} ({time.perf_counter() - t:.1f} s)")

    saved_at, failure = state.step, None
    while state.step < cfg.steps and not stop:
        try:
            for i, why in cluster.restart_stopped_actors():  # Ray restarted a dead process
                restarts["actor_restarts"] += 1
                log.message(f"actor {i} stopped ({why}); restarting it")
        except distributed.ActorStartError as e:
            failure = str(e)
            break
        # what the actors sent (asked a few times a second: each ask is a round trip)
        before = state.step
        if time.time() - last_ask >= 0.2:
            last_ask = time.time()
            stats = cluster.replay.stats()
            for k in cluster.replay.take_restarts():
                restarts["shard_restarts"] += 1
                log.message(f"replay shard {k} was restarted (empty); its actors go on")
            state.step = max(state.step, stats["received"])
            for score, length in stats["games"]:
                log.game(state.step, score, length, state.record_game(score))
        if stats["valid"] > 0 and stats["size"] >= cfg.learn_start:
            learning.update(state)
        else:
            time.sleep(0.05)  # waiting for the actors to fill the replay

        # ---- evaluate, save, report ----------------------------------------------------------
        evaluations.collect(state, log, started)
        if crossed(before, state.step, cfg.eval_freq) and state.step > cfg.learn_start:
            evaluations.start(state, agent.online.get_weights())
        state.train_seconds = time.time() - started
        if crossed(before, state.step, cfg.save_freq) and state.step < cfg.steps:
            save()  # (at the budget: saved below, after the last evaluation)
            saved_at = state.step
        if crossed(before, state.step, cfg.prog_freq):
            report(log, state, updates_per_s(state.updates), stats["size"], restarts)
        if stop_score_reached(cfg, state):
            log.message(f"evaluation mean {state.last_eval:.2f} >= --stop-score "
                        f"{cfg.stop_score}: stopping")
            break

    # ---- stop every actor, finish the last evaluation, save, leave no process behind ------------
    cluster.stop_actors()
    if evaluations.pending is not None and not stop and failure is None:
        log.message("waiting for the last evaluation (started at the step budget)")
        evaluations.collect(state, log, started, wait=True)
    state.train_seconds = time.time() - started
    if saved_at != state.step:
        save()
    close_log(log, state, stop, "apex.py", cfg.run_dir,
              f"done: {state.step:,} agent steps, {state.updates:,} updates in "
              f"{state.train_seconds:.0f} s; last evaluation {state.last_eval}, best "
              f"{state.best_score}")
    cluster.shutdown()
    if started_ray:
        ray.shutdown()
    if failure:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
