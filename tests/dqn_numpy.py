"""A numpy transcription of DQN 3.0's getQUpdate (NeuralQLearner.lua L180-237).

Independent of TensorFlow and of the op: it follows the Lua line by line, in the
accumulator precision (float32 for float16/bfloat16/float32 inputs, float64 for float64),
hyperparameters included. `discount` may be one value or one per row (n-step returns).
Lua indexes actions from 1; here from 0.
"""

import numpy as np


def get_q_update(q_all, q2_all, a, r, term, *, discount, r_max, clip_delta, q2_online=None):
    acc = np.float64 if q_all.dtype == np.float64 else np.float32
    q_all = q_all.astype(acc)
    q2_all = q2_all.astype(acc)
    # term = term:clone():float():mul(-1):add(1)
    term = (np.asarray(term).astype(acc) * acc(-1)) + acc(1)
    # q2_max = target_q_net:forward(s2):float():max(2)
    if q2_online is None:
        q2_max = q2_all.max(axis=1)
    else:  # double DQN (not in DQN 3.0): first argmax of the online network's Q(s2, .)
        q2_max = q2_all[np.arange(len(q2_all)), np.argmax(q2_online.astype(acc), axis=1)]
    # q2 = q2_max:clone():mul(self.discount):cmul(term)
    q2 = (q2_max * np.asarray(discount).astype(acc)) * term
    # delta = r:clone():float(); if self.rescale_r then delta:div(self.r_max) end
    delta = np.asarray(r).astype(acc) / acc(r_max)
    delta = delta + q2
    # q[i] = q_all[i][a[i]]; delta:add(-1, q)
    q = q_all[np.arange(len(q_all)), a]
    err = delta - q
    delta = err.copy()
    if clip_delta > 0:
        clip = acc(clip_delta)
        delta[delta >= clip] = clip
        delta[delta <= -clip] = -clip
        abs_err = np.abs(err)
        loss = np.where(abs_err <= clip, acc(0.5) * err * err, clip * (abs_err - acc(0.5) * clip))
    else:
        loss = acc(0.5) * err * err
    # targets = zeros(B, n_actions); targets[i][a[i]] = delta[i]
    targets = np.zeros_like(q_all)
    targets[np.arange(len(q_all)), a] = delta
    return loss, targets, delta, q2_max
