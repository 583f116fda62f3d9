"""The environments' ids: one per dataset, registered with Gymnasium on ``import dynalay_env``.

``DynaLay-<DATASET>-v0`` for every image dataset (:data:`ENV_IDS`) and text dataset
(:data:`TEXT_ENV_IDS`); :func:`dataset_of` goes back from an id to its dataset. Bump the
version on any change to the MDP (reward, observation or dynamics).
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from dynalay_env.data import DATASETS, TEXT_DATASETS

#: The image datasets' env ids, by name.
ENV_IDS = {name: f"DynaLay-{name}-v0" for name in DATASETS}
#: The text datasets' env ids (the sequence network; :mod:`dynalay_env.data.text`), by name.
TEXT_ENV_IDS = {name: f"DynaLay-{name}-v0" for name in TEXT_DATASETS}


def dataset_of(env_id: str) -> str:
    """The dataset an env id runs on; a clear error for an id that is not DynaLay's."""
    known = {**ENV_IDS, **TEXT_ENV_IDS}
    for dataset, known_id in known.items():
        if known_id == env_id:
            return dataset
    raise ValueError(f"unknown env id {env_id!r}; choose one of {sorted(known.values())}")


def register_envs() -> None:
    """Register every id (once) with string entry points, so ``gymnasium.make`` and
    ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")`` import the faces."""
    for name, env_id in {**ENV_IDS, **TEXT_ENV_IDS}.items():
        if env_id not in registry:
            register(
                id=env_id,
                entry_point="dynalay_env.env:DynaLayEnv",
                vector_entry_point="dynalay_env.vector_env:DynaLayVectorEnv",
                kwargs={"dataset": name},
            )
