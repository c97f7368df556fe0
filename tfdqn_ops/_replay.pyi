"""Type stub of the compiled tfdqn_ops._replay module. The contract (rules, ids, errors): the
docstring of tfdqn_ops/replay.py, its one copy."""

import os
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, "os.PathLike[str]"]

class ReplayBatch(NamedTuple):
    s: npt.NDArray[np.uint8]
    a: npt.NDArray[np.int32]
    r: npt.NDArray[np.float32]
    s2: npt.NDArray[np.uint8]
    term: npt.NDArray[np.float32]
    discount: npt.NDArray[np.float32]
    index: npt.NDArray[np.int64]
    weight: npt.NDArray[np.float32]

class ReplayMemory:
    def __init__(
        self,
        capacity: int,
        frame_shape: Union[int, Sequence[int]] = (84, 84),
        history: int = 4,
        num_envs: int = 1,
        seed: int = 0,
        *,
        n_step: int = 1,
        discount: float = 0.99,
        priority_exponent: float = 0.0,
    ) -> None: ...
    def add(
        self,
        frames: npt.NDArray[np.uint8],
        actions: npt.ArrayLike,
        rewards: npt.ArrayLike,
        terminals: npt.ArrayLike,
    ) -> None: ...
    def add_stream(
        self,
        env_index: int,
        frames: npt.NDArray[np.uint8],
        actions: npt.ArrayLike,
        rewards: npt.ArrayLike,
        terminals: npt.ArrayLike,
    ) -> None: ...
    def stream_added(self, env_index: int) -> int: ...
    def sample(
        self, batch_size: int
    ) -> Tuple[
        npt.NDArray[np.uint8],
        npt.NDArray[np.int32],
        npt.NDArray[np.float32],
        npt.NDArray[np.uint8],
        npt.NDArray[np.float32],
    ]: ...
    def sample_batch(self, batch_size: int, importance_exponent: float = 1.0) -> ReplayBatch: ...
    def update_priorities(self, indices: npt.ArrayLike, priorities: npt.ArrayLike) -> int: ...
    def priorities(self, indices: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
    def sample_into(
        self,
        s: npt.NDArray[np.uint8],
        a: npt.NDArray[np.int32],
        r: npt.NDArray[np.float32],
        s2: npt.NDArray[np.uint8],
        term: npt.NDArray[np.float32],
    ) -> None: ...
    def sample_windows(
        self, batch_size: int
    ) -> Tuple[
        npt.NDArray[np.uint8],
        npt.NDArray[np.int32],
        npt.NDArray[np.float32],
        npt.NDArray[np.float32],
    ]: ...
    def sample_windows_into(
        self,
        windows: npt.NDArray[np.uint8],
        a: npt.NDArray[np.int32],
        r: npt.NDArray[np.float32],
        term: npt.NDArray[np.float32],
    ) -> None: ...
    def acting_state(
        self, env_index: int, frame: Optional[npt.NDArray[np.uint8]] = None
    ) -> npt.NDArray[np.uint8]: ...
    def acting_states(
        self,
        frames: Optional[npt.NDArray[np.uint8]] = None,
        out: Optional[npt.NDArray[np.uint8]] = None,
    ) -> npt.NDArray[np.uint8]: ...
    def __len__(self) -> int: ...
    def stream_size(self, env_index: int) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def history(self) -> int: ...
    @property
    def num_envs(self) -> int: ...
    @property
    def frame_shape(self) -> Tuple[int, ...]: ...
    @property
    def num_valid_windows(self) -> int: ...
    @property
    def rng_state(self) -> Tuple[int, int, int, int]: ...
    @property
    def n_step(self) -> int: ...
    @property
    def discount(self) -> float: ...
    @property
    def priority_exponent(self) -> float: ...
    @property
    def max_priority(self) -> float: ...
    @property
    def priority_total(self) -> float: ...
    @property
    def priority_min(self) -> float: ...
    def save(self, path: _Path) -> None: ...
    @staticmethod
    def load(path: _Path) -> "ReplayMemory": ...

def _xxh64(data: bytes, seed: int = 0) -> int: ...
