"""Environments as DQN 3.0 saw them, and a pool of N of them feeding the replay's N streams.

Atari (reference §5, deepmind/alewrap): `actrep` emulator frames per agent step with rewards
summed; the observation is the pixel-wise max of the last two frames, converted to luminance
and shrunk to 84x84 the way Torch7's `image.scale(..., 'bilinear')` shrinks; k + 1 no-op
frames (k uniform in 1..30) after every new game and every lost life; in training a lost life
is a terminal for learning, stops the action repeat at that frame, and the game goes on.
`ALE/<Game>-v5` is made with `frameskip=1` and no sticky actions.

Dopamine's Atari (`--preset dopamine`, google/dopamine atari_lib.py): the same wrapper with
sticky actions 0.25 in the emulator, no no-op starts, no life-loss terminal, and ALE's
grayscale frames max-pooled then area-resized (`preprocess="dopamine"`).

MinAtar (`MinAtar/<Game>-v0`, package `minatar`) is used as it is, with its defaults (sticky
actions 0.1, difficulty ramping): boolean [10, 10, channels] observations, stored in the
uint8 replay memory as 0/1 bytes, one observation per transition.

Vector-observation envs (CartPole-v1, ...) are used as they are; their float32 observations
travel through the uint8 replay memory as raw bytes (`VectorCodec`).
"""

import warnings
from typing import List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np

from tfdqn_trainer import plain_state
from tfdqn_trainer.config import Config, ConfigError

# Torch7 image.rgb2y (ITU-R BT.601 luma), which DQN 3.0's preprocessing applies.
LUMINANCE = (0.299, 0.587, 0.114)
ATARI_SIZE = 84


def derive_seed(*keys: int) -> int:
    """A 32-bit seed from a tuple of integers (run seed, purpose, env index, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------
# Preprocessing


def shrink_weights(src_len: int, dst_len: int) -> np.ndarray:
    """float64 [dst_len, src_len]: Torch7's 'bilinear' scale when shrinking one axis.

    Torch7 (image/generic/image.c, scaleLinear_rowcol) does not interpolate when the output is
    smaller: output pixel d averages the input span [d * s, (d + 1) * s), s = src/dst, each
    input pixel weighted by how much of it the span covers (a box filter with fractional
    ends, like OpenCV's INTER_AREA). It shrinks rows first, then columns; both are linear,
    so one matrix per axis gives the same result.
    """
    if not 0 < dst_len <= src_len:
        raise ValueError(f"shrink_weights only shrinks: src_len {src_len}, dst_len {dst_len}")
    scale = src_len / dst_len
    weights = np.zeros((dst_len, src_len))
    for d in range(dst_len):
        lo, hi = d * scale, (d + 1) * scale
        for s in range(int(np.floor(lo)), min(int(np.ceil(hi)), src_len)):
            weights[d, s] = min(hi, s + 1) - max(lo, s)
        weights[d] /= weights[d].sum()
    return weights


class Preprocessor:
    """Two RGB frames [H, W, 3] uint8 -> uint8 [size, size]: max, luminance, shrink.

    OpenCV's INTER_AREA on float32 computes exactly `shrink_weights` (the tests check it) in
    ~0.1 ms, without the BLAS threads that make a numpy matmul slow on a busy CPU. DQN 3.0
    kept the shrunk frame as a float in [0, 1] and stored `frame * 255` as a byte
    (truncating); this rounds to the nearest level instead, at most one level apart.
    """

    def __init__(self, height: int, width: int, size: int = ATARI_SIZE):
        import cv2  # opencv-python-headless
        self._cv2 = cv2
        self.size = size
        self._max = np.empty((height, width, 3), np.uint8)

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        rgb = np.maximum(frame_a, frame_b, out=self._max)
        # COLOR_RGB2GRAY on float32 is 0.299 R + 0.587 G + 0.114 B, Torch7's rgb2y.
        luma = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(luma, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.clip(np.rint(small), 0, 255).astype(np.uint8)


class GrayscalePreprocessor:
    """Two grayscale frames [H, W] uint8 -> uint8 [size, size]: max, then OpenCV's area
    resize of the uint8 frame, as Dopamine's AtariPreprocessing._pool_and_resize does
    (google/dopamine, dopamine/discrete_domains/atari_lib.py). The frames are ALE's own
    grayscale (ale.getScreenGrayscale), not a luminance of the RGB screen."""

    def __init__(self, height: int, width: int, size: int = ATARI_SIZE):
        import cv2  # opencv-python-headless
        self._cv2 = cv2
        self.size = size
        self._max = np.empty((height, width), np.uint8)

    def __call__(self, frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
        pooled = np.maximum(frame_a, frame_b, out=self._max)
        return self._cv2.resize(pooled, (self.size, self.size),
                                interpolation=self._cv2.INTER_AREA)


PREPROCESSING = ("dqn3", "dopamine")


def preprocess_reference(frame_a: np.ndarray, frame_b: np.ndarray,
                         size: int = ATARI_SIZE) -> np.ndarray:
    """The same transformation written out in float64 numpy (for tests)."""
    rgb = np.maximum(frame_a, frame_b).astype(np.float64)
    luma = rgb @ np.array(LUMINANCE)
    rows = shrink_weights(luma.shape[0], size)
    cols = shrink_weights(luma.shape[1], size)
    return np.clip(np.rint(rows @ luma @ cols.T), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Atari


class DQN3Atari(gym.Wrapper):
    """An ALE game as DQN 3.0's alewrap served it (see the module docstring).

    step(a) returns (obs uint8 [84, 84], summed unclipped reward, terminated, truncated, info)
    with info = {"lives", "life_lost", "game_over"}; game_over is True when the game really
    ended (game over, or v5's 108,000-frame cap, reported as truncated), which is what a
    score is counted over.

    With terminal_on_life_loss (training), losing a life ends the action repeat at that frame
    and sets terminated=True but the game is NOT reset: the following reset() plays only the
    no-op frames and continues the same game (lives, score and emulator state kept). reset()
    starts a new game when the game is over, on the first call, when given a seed, or with
    options={"new_game": True}.
    """

    def __init__(self, env: gym.Env, *, actrep: int = 4, random_starts: int = 30,
                 terminal_on_life_loss: bool = True, preprocess: str = "dqn3",
                 size: int = ATARI_SIZE):
        super().__init__(env)
        if actrep < 1 or random_starts < 0:
            raise ValueError(f"actrep must be >= 1 and random_starts >= 0, got {actrep}, "
                             f"{random_starts}")
        if preprocess not in PREPROCESSING:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, got "
                             f"{preprocess!r}")
        self.ale = env.unwrapped.ale
        self.actrep = actrep
        self.random_starts = random_starts
        self.terminal_on_life_loss = terminal_on_life_loss
        self._action_set = env.unwrapped._action_set  # the game's minimal action set
        height, width = self.ale.getScreenDims()
        if preprocess == "dopamine":  # the last two frames, in ALE's grayscale
            self._screens = np.zeros((2, height, width), np.uint8)
            self._fetch_screen = self.ale.getScreenGrayscale
            self._preprocess = GrayscalePreprocessor(height, width, size)
        else:  # the last two frames, in RGB
            self._screens = np.zeros((2, height, width, 3), np.uint8)
            self._fetch_screen = self.ale.getScreenRGB
            self._preprocess = Preprocessor(height, width, size)
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)
        self._noop = self._action_set[0]  # NOOP is first in every minimal action set
        self._rng = np.random.default_rng()
        self._lives = 0
        self._needs_new_game = True

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        new_game = (self._needs_new_game or seed is not None
                    or bool(options and options.get("new_game")))
        if new_game:
            self.env.reset(seed=seed)
        self._needs_new_game = False
        self._play(self._noop, self._draw_noops())
        if self.ale.game_over():  # no-ops alone ended the game: start a fresh one
            self.env.reset()
            self._play(self._noop, 0)
        self._lives = self.ale.lives()
        return self._observe(), {"lives": self._lives, "new_game": new_game}

    def _draw_noops(self) -> int:
        """No-op frames before play (re)starts: DQN 3.0's nextRandomGame(k), k uniform in
        1..random_starts, plays newGame()'s one null frame, k - 1 more, then one more to
        read the state (alewrap GameEnvironment.lua): k + 1 frames, 2..31 with 30. With
        random_starts 0, none (Dopamine's games start at once)."""
        if not self.random_starts:
            return 0
        return int(self._rng.integers(1, self.random_starts + 1)) + 1

    def step(self, action):
        # DQN 3.0 stops repeating the action at the frame where a life is lost in training
        # (alewrap GameEnvironment.lua step: the life-loss terminal breaks the actrep loop).
        reward = self._play(self._action_set[int(action)], self.actrep,
                            stop_on_life_loss=self.terminal_on_life_loss)
        lives = self.ale.lives()
        life_lost = lives < self._lives
        self._lives = lives
        game_over = self.ale.game_over()              # includes the frame cap
        truncated = self.ale.game_truncated()
        terminated = (game_over and not truncated) or (life_lost and self.terminal_on_life_loss)
        self._needs_new_game = game_over
        info = {"lives": lives, "life_lost": life_lost, "game_over": game_over}
        return self._observe(), reward, terminated, truncated, info

    def _play(self, ale_action, frames: int, stop_on_life_loss: bool = False) -> float:
        """`frames` emulator frames of one action, fewer if the game ends (or, with
        stop_on_life_loss, a life is lost) on the way; keeps the last two screens."""
        reward = 0.0
        lives_before = self._lives
        if frames == 0:
            self._fetch_screen(self._screens[1])
            self._screens[0] = self._screens[1]
            return reward
        for i in range(frames):
            reward += self.ale.act(ale_action)
            if i >= frames - 2:
                # frames == 1: the previous frame moves to slot 0, so the max still spans two
                slot = i - (frames - 2)
                if frames == 1:
                    self._screens[0] = self._screens[1]
                self._fetch_screen(self._screens[slot])
            if self.ale.game_over() or (stop_on_life_loss
                                        and self.ale.lives() < lives_before):
                if i < frames - 1:
                    self._fetch_screen(self._screens[1])
                    if i < frames - 2:
                        self._screens[0] = self._screens[1]
                break
        return reward

    def _observe(self) -> np.ndarray:
        return self._preprocess(self._screens[0], self._screens[1])

    # Exact resume: the emulator state (with its RNG) and this wrapper's own state.
    def get_state(self) -> dict:
        return {"ale": self.ale.cloneState(include_rng=True).serialize(),  # ALE's own bytes
                "rng": self._rng.bit_generator.state, "lives": self._lives,
                "needs_new_game": self._needs_new_game, "screens": self._screens.copy()}

    def set_state(self, state: dict) -> None:
        import ale_py  # only Atari envs get here, and ale-py made them
        self.ale.restoreState(ale_py.ALEState(state["ale"]))
        self._rng.bit_generator.state = state["rng"]
        self._lives = state["lives"]
        self._needs_new_game = state["needs_new_game"]
        self._screens[...] = state["screens"]


# --------------------------------------------------------------------------------------------
# Making and checking environments


def _ensure_ale_registered() -> None:
    try:
        import ale_py
    except ImportError:
        return
    gym.register_envs(ale_py)


MINATAR_PREFIX = "MinAtar/"


def _ensure_minatar_registered() -> None:
    """gymnasium 1.x does not import minatar's registrations by itself: register them once."""
    if any(env_id.startswith(MINATAR_PREFIX) for env_id in gym.registry):
        return
    try:
        import minatar.gym
    except ImportError:
        return
    minatar.gym.register_envs()


def _ensure_registered() -> None:
    _ensure_ale_registered()
    _ensure_minatar_registered()


def is_atari(env_id: str) -> bool:
    _ensure_registered()
    return "ale_py" in str(gym.spec(env_id).entry_point)


def is_minatar(env_id: str) -> bool:
    return env_id.startswith(MINATAR_PREFIX)


def check_env(cfg: Config) -> None:
    """Fail fast, with a ConfigError, for an env id that does not exist or does not fit."""
    _ensure_registered()
    try:
        gym.spec(cfg.env)
    except gym.error.Error as e:
        hint = ""
        if cfg.env.startswith("ALE/"):
            hint = " (install ale-py for Atari games: pip install ale-py)"
        elif is_minatar(cfg.env):
            hint = (" (MinAtar's ids are MinAtar/{Asterix,Breakout,Freeway,Seaquest,"
                    "SpaceInvaders}-v0 or -v1; install it with pip install '.[minatar]')")
        raise ConfigError(f"--env {cfg.env!r}: {e}{hint}") from None
    if is_atari(cfg.env):
        if cfg.network not in ("auto", "nature"):
            raise ConfigError(f"--network {cfg.network} does not fit the 84x84 frames of "
                              f"{cfg.env} (use nature)")
        return
    if cfg.sticky_actions > 0:
        raise ConfigError(f"--sticky-actions {cfg.sticky_actions} applies to ALE Atari games "
                          f"only; {cfg.env} is not one (MinAtar has its own sticky actions)")
    if is_minatar(cfg.env):
        if cfg.network not in ("auto", "minatar"):
            raise ConfigError(f"--network {cfg.network} does not fit the [10, 10, channels] "
                              f"observations of {cfg.env} (use minatar)")
        return
    env = gym.make(cfg.env)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(act_space, gym.spaces.Discrete):
        raise ConfigError(f"--env {cfg.env!r}: DQN needs Discrete actions, the env has "
                          f"{act_space}")
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise ConfigError(f"--env {cfg.env!r}: only ALE Atari games and 1-D Box observations "
                          f"are supported, the env has {obs_space}")
    if cfg.network in ("nature", "minatar"):
        raise ConfigError(f"--network {cfg.network} needs image observations; {cfg.env} has "
                          "vector observations")


def make_env(cfg: Config, *, training: bool) -> gym.Env:
    """One environment; for Atari wrapped as DQN 3.0 (life loss terminal only in training)."""
    _ensure_registered()
    if is_atari(cfg.env):
        env = gym.make(cfg.env, frameskip=1, repeat_action_probability=cfg.sticky_actions,
                       full_action_space=False)
        return DQN3Atari(env, actrep=cfg.actrep, random_starts=cfg.random_starts,
                         terminal_on_life_loss=training and cfg.life_loss_terminal,
                         preprocess=cfg.preprocess)
    if is_minatar(cfg.env):
        with warnings.catch_warnings():  # "-v0 is out of date": v0 (all 6 actions) is the
            warnings.simplefilter("ignore", DeprecationWarning)  # paper's choice, on purpose
            return gym.make(cfg.env)
    return gym.make(cfg.env)


# --------------------------------------------------------------------------------------------
# Observations in the replay memory (which stores uint8 frames)


class ImageCodec:
    """Atari frames and MinAtar planes: stored and fed to the network as uint8 (MinAtar's
    booleans become 0/1 when written into the pool's uint8 frames)."""

    image = True

    def __init__(self, shape: Tuple[int, ...]):
        self.frame_shape = tuple(shape)
        self.obs_shape = self.frame_shape

    def encode(self, obs) -> np.ndarray:
        return obs

    def decode(self, frames: np.ndarray) -> np.ndarray:
        return frames


class VectorCodec:
    """float32 vectors [d] stored as their 4*d raw bytes; decode is a zero-copy view.

    A zeroed (earlier-episode) frame decodes to a vector of 0.0, like a zero image.
    """

    image = False

    def __init__(self, dim: int):
        self.dim = dim
        self.frame_shape = (4 * dim,)
        self.obs_shape = (dim,)

    def encode(self, obs) -> np.ndarray:
        return np.ascontiguousarray(obs, np.float32).view(np.uint8)

    def decode(self, frames: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frames).view(np.float32)


def make_codec(env: gym.Env):
    shape = env.observation_space.shape
    if len(shape) == 1:
        return VectorCodec(shape[0])
    return ImageCodec(shape)


# --------------------------------------------------------------------------------------------
# N environments


class EnvPool:
    """N environments stepped in turn, the way DQN 3.0's train_agent.lua steps one.

    A terminal observation is an agent step of its own: it goes into the replay with its
    terminal flag, its action is ignored, and the step after it calls the env's reset(): a
    new game, or, after a lost life in training, the same game continued after the no-op
    frames (DQN3Atari). A time limit (truncated, not terminated) is not a terminal: the env
    is reset at once and the new game's first observation takes the place of the last one,
    so the last transition bootstraps from a fresh start instead of learning that time
    running out ends all reward (the states carry no clock). With hist_len > 1 the next
    few acting states still show frames of the old game (Atari's cap is 108,000 frames).

    After reset() and step(): `frames` uint8 [N, *frame_shape] (the current observations,
    encoded for the replay) and `terminals` bool [N] (whether each is terminal); after
    step(), `acted` bool [N]: whether each env took its action (False for an env that was
    reset from a terminal observation, whose action was ignored).
    """

    def __init__(self, envs: Sequence[gym.Env], codec):
        self.envs: List[gym.Env] = list(envs)
        self.codec = codec
        n = len(self.envs)
        self.frames = np.zeros((n,) + codec.frame_shape, np.uint8)
        self.terminals = np.zeros(n, bool)
        self.acted = np.zeros(n, bool)
        self.scores = np.zeros(n)          # unclipped score of each game so far
        self.game_steps = np.zeros(n, np.int64)
        self.n_actions = int(self.envs[0].action_space.n)

    def __len__(self) -> int:
        return len(self.envs)

    def reset(self, seeds: Sequence[int]) -> None:
        for i, (env, seed) in enumerate(zip(self.envs, seeds)):
            obs, _ = env.reset(seed=int(seed))
            self.frames[i] = self.codec.encode(obs)
        self.terminals[:] = False
        self.scores[:] = 0.0
        self.game_steps[:] = 0

    def step(self, actions: Sequence[int]) -> Tuple[np.ndarray, List[Tuple[float, int]]]:
        """One agent step of every env -> (unclipped rewards [N], [(score, length)] of the
        games that ended in this step)."""
        rewards = np.zeros(len(self.envs))
        finished = []
        self.acted[:] = ~self.terminals
        for i, env in enumerate(self.envs):
            if self.terminals[i]:
                obs, _ = env.reset()
                terminal = False
            else:
                obs, reward, terminated, truncated, info = env.step(int(actions[i]))
                terminal = bool(terminated)
                rewards[i] = reward
                self.scores[i] += reward
                self.game_steps[i] += 1
                if info.get("game_over", terminated or truncated):
                    finished.append((float(self.scores[i]), int(self.game_steps[i])))
                    self.scores[i] = 0.0
                    self.game_steps[i] = 0
                if truncated and not terminated:
                    # A time limit is not a terminal: the next game's first observation
                    # follows in the same stream, so this step's transition bootstraps from it.
                    obs, _ = env.reset()
            self.frames[i] = self.codec.encode(obs)
            self.terminals[i] = terminal
        return rewards, finished

    def get_state(self) -> dict:
        """Data only (see plain_state): each env's own get_state() where it has one (Atari:
        the emulator's bytes), else its plain attributes and those of what it wraps."""
        envs = [("wrapper", env.get_state()) if hasattr(env, "get_state")
                else ("plain", plain_state.capture(env)) for env in self.envs]
        return {"envs": envs, "frames": self.frames.copy(), "terminals": self.terminals.copy(),
                "scores": self.scores.copy(), "game_steps": self.game_steps.copy()}

    def set_state(self, state: dict) -> None:
        """Restore, after reset(), a get_state() of a pool built the same way."""
        for env, (kind, value) in zip(self.envs, state["envs"]):
            if kind == "wrapper":
                env.set_state(value)
            elif kind == "plain":
                plain_state.restore(env, value)
            else:
                raise ValueError(f"unknown environment state kind {kind!r}")
        self.frames[...] = state["frames"]
        self.terminals[...] = state["terminals"]
        self.scores[...] = state["scores"]
        self.game_steps[...] = state["game_steps"]

    def close(self) -> None:
        for env in self.envs:
            env.close()
