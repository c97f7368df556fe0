"""Why DQN 3.0's settings stay flat on Breakout: initial weights against RMSprop's epsilon.

    python benchmarks/probe_init.py                      # both initializations, 10k updates
    python benchmarks/probe_init.py --updates 2000 --json probe.json

DQN 3.0's centered RMSprop divides each weight's gradient of the SUMMED loss by
sqrt(g2 - g^2 + 0.01). While those gradients are far below sqrt(0.01) = 0.1, the root is
about 0.1 and the optimizer is plain SGD with step lr / 0.1 = 2.5e-3. An SGD step of size
eta on the loss changes Q(s, a) by about eta * delta * ||dQ(s, a)/dtheta||^2 for a TD error
delta, so the size of ||dQ/dtheta||^2 at the start decides how fast Q can move at all.
Torch7's initialization (U(+-1/sqrt(fan_in)) for weights and biases) and Glorot-uniform
weights with zero biases (Dopamine's) give very different ||dQ/dtheta||^2; this probe
measures, for each, on random-play Breakout states (DQN 3.0's environment: life-loss
terminals, no sticky actions):

- per layer, the RMS over the layer's weights of the summed-loss gradient of a minibatch of
  32 (the gradient DQN 3.0's optimizer sees), against sqrt(eps) = 0.1;
- per layer, ||dQ(s, a)/dtheta||^2 summed over the layer's weights, averaged over 64 states
  and all actions, and their total;
- lr / sqrt(eps) * total: the change of Q(s, a) per update per unit of TD error while the
  optimizer is SGD-like (a TD error of delta in one minibatch row moves its Q by this times
  delta);
- RMSprop's denominator sqrt(g2 - g^2 + eps) averaged over each layer's weights (0.1 = SGD).

It measures at initialization and after --updates updates of the fast schedule with DQN 3.0's
optimizer (README: update every 4 agent steps, target copy every 1,000 steps, centered
RMSprop lr 2.5e-4, eps 0.01 inside the root, summed Huber loss), learning from a replay of
random play (epsilon 1 throughout, so both initializations learn from the same kind of
data). Takes about 10-15 minutes per initialization on a 2-core CPU.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdqn_ops  # noqa: E402

from tfdqn_trainer import config as config_lib  # noqa: E402
from tfdqn_trainer.build import make_agent, make_pool  # noqa: E402
from tfdqn_trainer.envs import derive_seed  # noqa: E402
from tfdqn_trainer.trainer import Actor, Learner, PhaseTimes, epsilon_schedule  # noqa: E402
from tfdqn_ops import ReplayMemory  # noqa: E402

EPSILON = 0.01  # DQN 3.0's RMSprop epsilon (inside the root)


def fast_dqn3_optimizer_config(init: str, seed: int) -> config_lib.Config:
    """The README's fast Breakout schedule with DQN 3.0's optimizer, acting at random."""
    cfg, _ = config_lib.parse_args([
        "--env", "ALE/Breakout-v5", "--seed", str(seed), "--optimizer", "rmsprop",
        "--lr", "0.00025", "--loss-reduction", "sum", "--replay-memory", "100000",
        "--learn-start", "10000", "--target-q", "1000", "--update-freq", "4",
        "--ep-start", "1", "--ep-end", "1", "--init", init])
    config_lib.validate(cfg)
    return cfg


def per_layer(model, values):
    """{layer/weight name: value} for a list of values parallel to the trainable weights."""
    return {w.path: v for w, v in zip(model.trainable_weights, values)}


def loss_gradient_rms(agent, learner, minibatches: int):
    """Per weight tensor: the RMS of the summed-loss gradient of a minibatch, averaged over
    `minibatches` minibatches from the replay (no update is applied)."""
    sums = None
    for _ in range(minibatches):
        replay = learner.replay
        replay.sample_windows_into(learner._windows[0], learner._actions[0],
                                   learner._rewards[0], learner._terminals[0])
        windows = learner.codec.decode(learner._windows[0])
        s, s2 = windows[:, :-1], windows[:, 1:]
        q_next = agent.target(s2, training=False)
        with tf.GradientTape() as tape:
            q = agent.online(s, training=True)
            out = tfdqn_ops.dqn_targets(q, q_next, learner._actions[0], learner._rewards[0],
                                        learner._terminals[0], discount=agent.discount,
                                        r_max=1.0, clip_delta=agent.clip_delta)
            loss = tf.reduce_sum(out.loss)
        grads = tape.gradient(loss, agent.online.trainable_weights)
        rms = [float(tf.sqrt(tf.reduce_mean(tf.square(g)))) for g in grads]
        sums = rms if sums is None else [a + b for a, b in zip(sums, rms)]
    return per_layer(agent.online, [v / minibatches for v in sums])


def q_gradient_norms(model, states: np.ndarray):
    """Per weight tensor: ||dQ(s, a)/dtheta||^2 over its weights, averaged over the states
    and all actions."""
    n_actions = int(model.output_shape[-1])
    totals = None
    for state in states:
        for action in range(n_actions):
            with tf.GradientTape() as tape:
                q = model(state[None], training=False)[0, action]
            grads = tape.gradient(q, model.trainable_weights)
            norms = [float(tf.reduce_sum(tf.square(g))) for g in grads]
            totals = norms if totals is None else [a + b for a, b in zip(totals, norms)]
    count = len(states) * n_actions
    return per_layer(model, [t / count for t in totals])


def rmsprop_denominators(agent):
    """Per weight tensor: the mean of sqrt(g2 - g^2 + eps) over its weights (Keras' centered
    RMSprop keeps g2 in its velocities and g in its average gradients)."""
    optimizer = agent.optimizer
    velocities = optimizer._velocities
    averages = optimizer._average_gradients
    values = [float(tf.reduce_mean(tf.sqrt(v - tf.square(g) + EPSILON)))
              for v, g in zip(velocities, averages)]
    return per_layer(agent.online, values)


def measure(agent, learner, states, lr, minibatches):
    norms = q_gradient_norms(agent.online, states)
    total = sum(norms.values())
    q = agent.q_values(states)
    return {"loss_gradient_rms": loss_gradient_rms(agent, learner, minibatches),
            "q_gradient_norm2": norms, "q_gradient_norm2_total": total,
            "q_change_per_unit_td_error": lr / np.sqrt(EPSILON) * total,
            "rmsprop_denominator": rmsprop_denominators(agent),
            "mean_max_q": float(q.max(axis=1).mean())}


def probe(init: str, updates: int, seed: int, minibatches: int, n_states: int) -> dict:
    cfg = fast_dqn3_optimizer_config(init, seed)
    pool = make_pool(cfg, 1, training=True)
    _, agent = make_agent(cfg, pool)
    replay = ReplayMemory(cfg.replay_memory, frame_shape=pool.codec.frame_shape,
                          history=cfg.hist_len, num_envs=1, seed=derive_seed(seed, 3))
    times = PhaseTimes()
    actor = Actor(cfg, pool, replay, agent.q_values, epsilon=epsilon_schedule(cfg), times=times,
                  rng=np.random.default_rng(derive_seed(seed, 1)))
    learner = Learner(cfg, agent, replay, pool.codec, times=times)
    pool.reset([derive_seed(seed, 2, 0)])
    step = 0
    while step < cfg.learn_start:  # random play before learning
        step += actor.act(step).steps
    # the probe's states: random-play states from the replay (fixed for both measurements)
    rng = np.random.default_rng(seed)
    states = []
    while len(states) < n_states:
        replay.sample_windows_into(learner._windows[0], learner._actions[0],
                                   learner._rewards[0], learner._terminals[0])
        states.extend(pool.codec.decode(learner._windows[0][:, :-1]))
    states = np.asarray(states[:n_states])
    rng.shuffle(states)
    result = {"init": init, "at": {}}
    result["at"][0] = measure(agent, learner, states, cfg.lr, minibatches)
    done, started = 0, time.time()
    while done < updates:
        before = step
        step += actor.act(step).steps
        done += learner.learn(before, step - before).updates
    result["at"][done] = measure(agent, learner, states, cfg.lr, minibatches)
    result["seconds"] = time.time() - started
    pool.close()
    return result


def print_table(results):
    for result in results:
        print(f"\n### init {result['init']}\n")
        checkpoints = sorted(result["at"])
        header = ["weights"]
        for at in checkpoints:
            header += [f"grad RMS @{at}", f"||dQ/dθ||² @{at}", f"RMSprop denom @{at}"]
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
        names = list(result["at"][checkpoints[0]]["q_gradient_norm2"])
        for name in names:
            cells = [name]
            for at in checkpoints:
                m = result["at"][at]
                cells += [f"{m['loss_gradient_rms'][name]:.2e}",
                          f"{m['q_gradient_norm2'][name]:.3g}",
                          f"{m['rmsprop_denominator'][name]:.4f}"]
            print("| " + " | ".join(cells) + " |")
        for at in checkpoints:
            m = result["at"][at]
            print(f"\nafter {at:,} updates: ||dQ/dθ||² total {m['q_gradient_norm2_total']:.3g}; "
                  f"Q change per update per unit TD error (lr / sqrt(eps) x total) "
                  f"{m['q_change_per_unit_td_error']:.3g}; mean max Q {m['mean_max_q']:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inits", default="torch7,glorot")
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minibatches", type=int, default=8,
                        help="minibatches whose gradient RMS is averaged (default: 8)")
    parser.add_argument("--states", type=int, default=64,
                        help="random-play states for ||dQ/dθ||² (default: 64)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--tf-threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.updates < 1 or args.minibatches < 1 or args.states < 1:
        parser.error("--updates, --minibatches and --states must be positive integers")
    if args.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
    results = [probe(init, args.updates, args.seed, args.minibatches, args.states)
               for init in args.inits.split(",")]
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
