"""DynaLay's main model: FPI blocks, the image and sequence networks, cost model, checkpoints.

PyTorch only: nothing here knows about reinforcement learning.
"""

from main_model.checkpoint import CheckpointError, load_main_model, save_main_model
from main_model.fpi import ContractiveConv, ContractiveConv2d, FixedPointResult, FPIBlock
from main_model.network import DynaLayConfig, DynaLayNet, FPINetwork, NetState, StepOutput
from main_model.sequence import DynaLaySeqConfig, DynaLaySeqNet, LSTMFPIBlock

__all__ = [
    "CheckpointError",
    "ContractiveConv",
    "ContractiveConv2d",
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
