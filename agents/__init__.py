"""The Stable-Baselines3 side of DynaLay (the library), and the studies built on it.

Library (one concern per module):

- ``vec_env``: the SB3 ``VecEnv`` adapter of the batched env; ``callbacks``: DynaLay's
  TensorBoard metrics; ``algorithms``: :data:`ALGORITHMS`, their hyperparameters
  (``hyperparams.yml``) and a saved agent read back as a policy;
- ``config``: :class:`~agents.config.TrainConfig` and a run's ``config.yaml``; ``cli``: a
  config dataclass's fields as flags (the training flags, the studies'); ``files``: the run
  directory (phase folders, manifests, the final checkpoints); ``sb3_logging``: the run's log
  and SB3 logger formats;
- the run directory's files, none of them unpickled: ``agent_zip`` (SB3's ``agent.zip`` read
  with every pickled entry supplied), ``normalization`` (``vecnormalize.json``),
  ``replay_buffer`` (``replay_buffer.npz``); ``convert``: older directories' pickles rewritten
  as those files;
- ``trainer``: the alternating trainer, which sequences the phases (pre-training and
  supervised phases through :mod:`main_model.train`, RL phases through SB3);
- ``evaluate``: policies and baselines run on a split; ``deploy``: export a run as one
  classifier file and ``predict`` with it.

Studies (tables, the beta sweep, the thesis's reproduction, reports) use the library and
live beside it (``experiments``, ``tradeoff``, ``reproduce``, ``report``).
"""

from agents.algorithms import ALGORITHMS
from agents.vec_env import DynaLaySB3VecEnv, make_sb3_vec_env

__all__ = ["ALGORITHMS", "DynaLaySB3VecEnv", "make_sb3_vec_env"]
