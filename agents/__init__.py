"""Stable-Baselines3 side of DynaLay: the VecEnv adapter (and, later, trainers and callbacks)."""

from agents.vec_env import DynaLaySB3VecEnv, make_sb3_vec_env

__all__ = ["DynaLaySB3VecEnv", "make_sb3_vec_env"]
