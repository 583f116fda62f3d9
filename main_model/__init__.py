"""DynaLay's main model: FPI blocks, the DynaLay network, its cost model and checkpoints.

PyTorch only: nothing here knows about reinforcement learning.
"""

from main_model.checkpoint import CheckpointError, load_main_model, save_main_model
from main_model.fpi import ContractiveConv2d, FixedPointResult, FPIBlock
from main_model.network import DynaLayConfig, DynaLayNet, NetState, StepOutput

__all__ = [
    "CheckpointError",
    "ContractiveConv2d",
    "DynaLayConfig",
    "DynaLayNet",
    "FPIBlock",
    "FixedPointResult",
    "NetState",
    "StepOutput",
    "load_main_model",
    "save_main_model",
]
