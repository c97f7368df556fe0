"""What the programs (train, evaluate, apex and its Ray workers) build from a run's Config:
environment pools and the Q-network, so that a run is evaluated on exactly the environments
and network it trained."""

from typing import Callable, Tuple

import keras
import tensorflow as tf

from tfdqn_trainer import agent as agent_lib
from tfdqn_trainer import envs as envs_lib
from tfdqn_trainer import networks
from tfdqn_trainer.config import Config


def make_pool(cfg: Config, count: int, *, training: bool,
              codec=None) -> envs_lib.EnvPool:
    """`count` environments as the run sees them (training: with life-loss terminals), in a
    pool. codec: another pool's, so that both encode observations alike (default: made for
    these environments)."""
    made = [envs_lib.make_env(cfg, training=training) for _ in range(count)]
    return envs_lib.EnvPool(made, codec or envs_lib.make_codec(made[0]))


def network_factory(cfg: Config, pool: envs_lib.EnvPool
                    ) -> Tuple[str, tf.TensorSpec, Callable[[], keras.Model]]:
    """(network kind, one state's TensorSpec, a function building a fresh network) for the
    pool's observations and actions with the run's --network, --hist-len, --mlp-hidden,
    --precision, --init and --conv-padding."""
    obs_shape = pool.codec.obs_shape
    kind = networks.network_kind(cfg.network, obs_shape)
    spec = networks.state_spec(kind, cfg.hist_len, obs_shape)

    def build() -> keras.Model:
        return networks.build_network(kind, pool.n_actions, spec, cfg.mlp_hidden,
                                      cfg.precision, cfg.init, cfg.conv_padding)

    return kind, spec, build


def make_agent(cfg: Config, pool: envs_lib.EnvPool) -> Tuple[str, agent_lib.Agent]:
    """(network kind, the run's Agent: networks, optimizer and update). Keras' seeds are set
    from --seed first, so the same run starts from the same weights. Raises
    agent_lib.JitCompileError when --jit-compile cannot compile the update."""
    kind, spec, build_network = network_factory(cfg, pool)
    keras.utils.set_random_seed(cfg.seed)
    agent = agent_lib.Agent(
        build_network, spec, discount=cfg.discount, clip_delta=cfg.clip_delta, lr=cfg.lr,
        double_dqn=cfg.double_dqn, optimizer=cfg.optimizer, loss_reduction=cfg.loss_reduction,
        optimizer_epsilon=cfg.rms_epsilon,
        jit_compile=cfg.jit_compile, jit_act=cfg.jit_act)
    return kind, agent
