"""DynaLay's Gymnasium environments; importing this package registers their ids.

- ``DynaLay-CIFAR10-v0`` (default), ``DynaLay-CIFAR100-v0``, ``DynaLay-FashionMNIST-v0``,
  ``DynaLay-MNIST-v0`` (images, the FPI CNN) and ``DynaLay-IMDB-v0``, ``DynaLay-WikiText2-v0``
  (text, the FPI LSTM network; one review or one window of tokens per episode, same MDP and
  reward): ``gymnasium.make(id, **kwargs)`` gives :class:`DynaLayEnv`,
  ``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` gives
  :class:`DynaLayVectorEnv`. ``gymnasium.make("dynalay_env:DynaLay-CIFAR10-v0")`` imports this
  package first, so no prior import is needed.

The MDP's specification (actions, observation, rewards, episode end, keyword arguments, info
keys) is :class:`DynaLayEnv`'s docstring. Modules:

- ``mdp``: the reward and its settings (:class:`MDPConfig`); ``registry``: the env ids;
- ``core``: the batched MDP; ``env``, ``vector_env``: its two Gymnasium faces; ``build``: the
  ways to build a core;
- ``data``: datasets and splits (``data.splits`` common, ``data.images``, ``data.text``);
- ``models``: where an env's main model comes from (given, cached, shipped, or pre-trained
  with :mod:`main_model.train`); ``pretrain``: ``python -m dynalay_env.pretrain``.
"""

from dynalay_env.core import DynaLayCore
from dynalay_env.data import DataNotFoundError, ImageSplit, TextSplit, load_splits
from dynalay_env.env import DynaLayEnv
from dynalay_env.mdp import MDPConfig
from dynalay_env.registry import ENV_IDS, TEXT_ENV_IDS, dataset_of, register_envs
from dynalay_env.vector_env import DynaLayVectorEnv

register_envs()

__all__ = [
    "ENV_IDS",
    "TEXT_ENV_IDS",
    "DataNotFoundError",
    "DynaLayCore",
    "DynaLayEnv",
    "DynaLayVectorEnv",
    "ImageSplit",
    "MDPConfig",
    "TextSplit",
    "dataset_of",
    "load_splits",
]
