"""DynaLay's Gymnasium environments; importing this package registers their ids.

- ``DynaLay-CIFAR10-v0`` (default), ``DynaLay-CIFAR100-v0``, ``DynaLay-FashionMNIST-v0``,
  ``DynaLay-MNIST-v0`` (images, the FPI CNN) and ``DynaLay-IMDB-v0``, ``DynaLay-WikiText2-v0``
  (text, the FPI LSTM network; one review or one window of tokens per episode, same MDP and
  reward): ``gymnasium.make(id, **kwargs)`` gives :class:`DynaLayEnv`,
  ``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` gives
  :class:`DynaLayVectorEnv`. ``gymnasium.make("dynalay_env:DynaLay-CIFAR10-v0")`` imports this
  package first, so no prior import is needed.

Keyword arguments are those of :func:`dynalay_env.build.build_core`.
"""

from gymnasium.envs.registration import register, registry

from dynalay_env.core import DynaLayCore
from dynalay_env.data import DATASETS, DataNotFoundError, ImageSplit, load_splits
from dynalay_env.env import DynaLayEnv
from dynalay_env.text import TEXT_DATASETS, TextSplit
from dynalay_env.vector_env import DynaLayVectorEnv

#: The image datasets' env ids, by name. Bump the version on any change to the MDP.
ENV_IDS = {name: f"DynaLay-{name}-v0" for name in DATASETS}
#: The text datasets' env ids (the sequence network; :mod:`dynalay_env.text`), by name.
TEXT_ENV_IDS = {name: f"DynaLay-{name}-v0" for name in TEXT_DATASETS}

for _name, _env_id in {**ENV_IDS, **TEXT_ENV_IDS}.items():
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point="dynalay_env.env:DynaLayEnv",
            vector_entry_point="dynalay_env.vector_env:DynaLayVectorEnv",
            kwargs={"dataset": _name},
        )

__all__ = [
    "ENV_IDS",
    "TEXT_ENV_IDS",
    "DataNotFoundError",
    "DynaLayCore",
    "DynaLayEnv",
    "DynaLayVectorEnv",
    "ImageSplit",
    "TextSplit",
    "load_splits",
]
