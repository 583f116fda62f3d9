"""``ent_coef_schedule='linear'``: PPO's entropy coefficient falls from the run's value to 0
over a phase, set before each update; an agent without one is refused with a clear error."""

from __future__ import annotations

import gymnasium as gym
import pytest
from stable_baselines3 import DQN, PPO

from agents.callbacks import LinearEntropySchedule
from agents.config import TrainConfig
from agents.trainer import AlternatingTrainer


class RecordEntCoef(LinearEntropySchedule):
    """The schedule, also recording what each update (one per rollout) trains with."""

    def _init_callback(self) -> None:
        super()._init_callback()
        self.seen: list[tuple[float, float]] = []

    def _on_rollout_end(self) -> None:
        super()._on_rollout_end()
        self.seen.append((self.model.ent_coef, self.model.num_timesteps))


def test_linear_schedule_decays_the_coefficient_with_progress():
    agent = PPO(
        "MlpPolicy",
        gym.make("CartPole-v1"),
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        ent_coef=0.5,
        seed=0,
    )
    schedule = RecordEntCoef(0.01)
    agent.learn(32 * 4, callback=schedule)
    coefficients = [c for c, _ in schedule.seen]
    # four rollouts of 32 steps in a 128-step phase: the updates train at the run's value x
    # the share of the phase left when their rollout began: 1, 3/4, 1/2, 1/4
    assert coefficients == pytest.approx([0.01, 0.0075, 0.005, 0.0025])
    assert [steps for _, steps in schedule.seen] == [32, 64, 96, 128]
    # a second phase (learn again, as the next round does) starts from the run's value again
    agent.learn(32 * 2, callback=(again := RecordEntCoef(0.01)), reset_num_timesteps=False)
    assert [c for c, _ in again.seen] == pytest.approx([0.01, 0.005])


def test_an_agent_without_an_entropy_bonus_is_refused(tmp_path):
    agent = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_starts=0, seed=0)
    with pytest.raises(ValueError, match="needs an agent with a constant float ent_coef"):
        agent.learn(8, callback=LinearEntropySchedule(0.01))
    config = TrainConfig(algo="dqn", env="DynaLay-MNIST-v0", ent_coef_schedule="linear")
    with pytest.raises(ValueError, match="needs an actor-critic agent .* not dqn"):
        AlternatingTrainer(config, tmp_path / "run")
