"""DynaLay's main model: FPI blocks, the image and sequence networks, their training.

PyTorch only: nothing here imports Gymnasium, Stable-Baselines3, ``dynalay_env`` or ``agents``.
Two modules know what the agent needs, so the environment and deployment share one definition:
:mod:`main_model.observation` (what an agent sees of a state, when an episode ends) and
:mod:`main_model.adaptive` (the deployable classifier: a main model and a plain-torch copy of
the agent's policy network, :class:`~main_model.adaptive.PolicyNetwork`).

Modules:

- ``fpi``, ``network``, ``sequence``, ``cost``: the FPI block, the image network (DynaLayNet),
  the sequence network (DynaLaySeqNet), FLOPs.
- ``recipes``: how a model is trained (which path each sample takes); ``train``: one epoch,
  a whole run, training on a data split (``iterate_batches``, ``train_main_model``);
  ``paths``: per-path statistics (accuracy, loss, FLOPs per static path); ``divergence``:
  every training step checked finite (``TrainingDiverged``).
- ``checkpoint``: the model file format; ``io``: atomic file writing; ``pixels``: pixel
  normalisation; ``progress``: progress bars; ``distributed``: torchrun and devices.
- ``observation``, ``adaptive``: the agent's view and the deployable classifier (see above).
"""

from main_model.checkpoint import CheckpointError, load_main_model, save_main_model
from main_model.fpi import FixedPointResult, FPIBlock
from main_model.loop_operators import ContractiveConv
from main_model.network import DynaLayConfig, DynaLayNet, FPINetwork, NetState, StepOutput
from main_model.sequence import DynaLaySeqConfig, DynaLaySeqNet, LSTMFPIBlock

__all__ = [
    "CheckpointError",
    "ContractiveConv",
    "DynaLayConfig",
    "DynaLayNet",
    "DynaLaySeqConfig",
    "DynaLaySeqNet",
    "FPIBlock",
    "FPINetwork",
    "FixedPointResult",
    "LSTMFPIBlock",
    "NetState",
    "StepOutput",
    "load_main_model",
    "save_main_model",
]
