"""DQN 3.0's evaluation (train_agent.lua): epsilon 0.05, full games, finished games only.

Evaluation environments never lose a game to a lost life (no life-loss terminal) and feed a
small separate ReplayMemory used only as the frame stack, so nothing enters the training
replay. A game still running when the step budget ends is not counted.
"""

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

from tfdqn_ops import ReplayMemory
from tfdqn_trainer.agent import select_actions
from tfdqn_trainer.envs import EnvPool


@dataclass
class EvalResult:
    scores: List[float] = field(default_factory=list)
    lengths: List[int] = field(default_factory=list)
    steps: int = 0
    aborted: bool = False

    @property
    def episodes(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> Optional[float]:
        return float(np.mean(self.scores)) if self.scores else None

    @property
    def max(self) -> Optional[float]:
        return float(np.max(self.scores)) if self.scores else None

    def record(self) -> dict:
        return {"eval_mean_score": self.mean, "eval_max_score": self.max,
                "eval_min_score": float(np.min(self.scores)) if self.scores else None,
                "eval_episodes": self.episodes, "eval_steps": self.steps}


def evaluate(q_values: Callable[[np.ndarray], np.ndarray], pool: EnvPool, hist_len: int, *,
             epsilon: float, rng: np.random.Generator, seeds, steps: Optional[int] = None,
             episodes: Optional[int] = None,
             should_stop: Callable[[], bool] = lambda: False) -> EvalResult:
    """Play until `steps` agent steps (all envs together) or `episodes` finished games.

    q_values maps decoded states [N, hist_len, ...] to Q [N, A]. If should_stop() turns
    True the evaluation ends early with aborted=True.
    """
    if steps is None and episodes is None:
        raise ValueError("evaluate needs steps or episodes")
    codec = pool.codec
    stack = ReplayMemory(len(pool) * (hist_len + 1), frame_shape=codec.frame_shape,
                         history=hist_len, num_envs=len(pool))
    pool.reset(seeds)
    result = EvalResult()
    zeros = np.zeros(len(pool), np.float32)
    while ((steps is None or result.steps < steps)
           and (episodes is None or result.episodes < episodes)):
        states = codec.decode(stack.acting_states(pool.frames))
        actions = select_actions(q_values, states, epsilon, pool.n_actions, rng)
        frames, terminals = pool.frames.copy(), pool.terminals.copy()
        _, finished = pool.step(actions)
        stack.add(frames, actions, zeros, terminals)
        for score, length in finished:
            result.scores.append(score)
            result.lengths.append(length)
        result.steps += len(pool)
        if should_stop():
            result.aborted = True
            break
    if episodes is not None:
        del result.scores[episodes:], result.lengths[episodes:]
    return result
