"""``DynaLayEnv``: the single-episode Gymnasium face of the batched core (one slot).

Its class docstring is the MDP's specification, in Gymnasium's sections.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dynalay_env.build import build_core
from dynalay_env.mdp import MDPConfig


class DynaLayEnv(gym.Env):
    """One input sample per episode: answer now (action 0) or loop blocks 1..k first (action k).

    The DynaLay MDP (Gymnasium ids ``DynaLay-<DATASET>-v0``, :mod:`dynalay_env`): a main model
    of ``n`` fixed-point-iteration blocks has run its straight pass on a sample; the agent
    decides whether to answer with the current prediction or to spend compute recomputing
    blocks 1..k to their fixed points first. One batched core
    (:class:`~dynalay_env.core.DynaLayCore`) runs this env (one slot) and
    :class:`~dynalay_env.vector_env.DynaLayVectorEnv` (N slots).

    ## Action Space

    ``Discrete(n + 1)``:

    - ``0`` (NOP): answer with the current prediction; the episode ends.
    - ``k`` in ``1..n``: loop blocks 1..k to their fixed points (warm-started from the current
      state), then run blocks k+1..n straight; a new prediction, and the next decision (or,
      after ``max_steps`` decisions, the answer). A main model made with
      ``loop_order="output"`` (an option of :class:`~main_model.DynaLayConfig`, not the
      thesis's) loops the k blocks nearest the head instead and re-runs nothing below them.

    ## Observation Space

    ``Box(float32, (D,))`` with ``n`` blocks of widths ``C_1..C_n``, ``K`` classes and
    ``P = C_1 + ... + C_n``; the slices are ``env.unwrapped.core.observation_layout``
    (:func:`main_model.observation.observation_layout`, which also writes them for the
    deployable classifier). For the sequence network the activations are averaged over time
    and lie in [-1, 1], and a language model shows ``K = 8`` values, the mean over positions of
    each position's 8 largest probabilities, sorted
    (:meth:`main_model.NetState.class_probabilities`).

    ====================  ===========================  =========================================
    index range           part                         values
    ====================  ===========================  =========================================
    [0, P)                pooled activations           global-average-pooled z_l of each block
    [P, P+K)              class probabilities          softmax of the current logits
    [P+K, P+K+n)          last FPI residual per block  1.0 after a straight pass, in [0, 10]
    [P+K+n, P+K+2n+1)     previous action, one-hot     all zeros before the first decision
    P+K+2n+1              its consecutive count        0 before the first decision
    P+K+2n+2              step index                   decisions taken so far, 0..max_steps-1
    ====================  ===========================  =========================================

    The consecutive count and the step index make the reward Markov in the observation.

    With ``observe_changes=True`` (off by default) three values follow the residuals, before
    the previous action (which, like everything after it, moves 3 places on): what the last
    decision changed (:func:`main_model.observation.change_features`): whether the predicted
    class changed (0/1), the change of the top probability (in [-1, 1]) and the total
    variation between the two softmaxes (in [0, 1]); all 0 before the first decision.

    ## Rewards

    :func:`dynalay_env.mdp.reward`, with the settings of an :class:`~dynalay_env.mdp.MDPConfig`:

    - a loop action k: ``-beta * cost * consecutive_count`` (``penalty="consecutive"``, the
      thesis's equation) or ``-beta * cost * k`` (``penalty="layer"``, its text), where
      ``cost`` in [0, 1] is the step's FLOPs divided by the FLOPs of the most expensive
      possible step and ``consecutive_count`` the number of decisions in a row, this one
      included, that chose this same k;
    - the answer (NOP, or the last of ``max_steps`` decisions): ``+ alpha * correct``, with
      ``correct`` 1 or 0, or for a language model the share of the window's positions whose
      next token is predicted right (:func:`dynalay_env.core.answer_accuracy`).

    ## Starting State

    The next sample of the split (drawn with ``self.np_random``, or in order with
    ``sequential=True``; ``reset(options={"index": i})`` starts on row ``i``), after the
    straight pass: the plain CNN's prediction.

    ## Episode End

    - Termination: action 0, or the ``max_steps``-th decision (``max_steps=1``: the thesis's
      one-shot choice, every episode is one step).
    - Truncation: only with ``max_episode_steps`` below ``max_steps`` (a Gymnasium time limit).

    ## Arguments

    ``gymnasium.make("DynaLay-CIFAR10-v0", **kwargs)`` (the vector env takes the same, plus
    ``num_envs``, ``max_episode_steps`` and ``autoreset_mode``); every keyword is optional:

    - ``dataset``: ``CIFAR10``, ``CIFAR100``, ``FashionMNIST``, ``MNIST`` (images, the CNN) or
      ``IMDB``, ``WikiText2`` (text, the LSTM network; :mod:`dynalay_env.data.text`); set by
      the id.
    - ``alpha`` (0.5), ``beta`` (0.3), ``max_steps`` (1), ``penalty`` (``"consecutive"``),
      ``shaping`` (``"none"``; ``"nop"``: potential-based, relative to NOP) and
      ``observe_changes`` (False; True: three more observation values, what the last loop
      changed): the episode's settings (## Rewards), checked by
      :class:`~dynalay_env.mdp.MDPConfig`; or all of them as one ``mdp=MDPConfig(...)``.
    - ``split``: where episodes come from: ``holdout`` (default: agent training; the main
      model never saw it), ``test`` (evaluation) or ``train``.
    - ``checkpoint``: a main-model checkpoint; default: the cached pretrained one, else the
      one shipped with the package (Fashion-MNIST), else pre-train one on first use
      (:mod:`dynalay_env.models`). ``model``: a main model object to use as is.
    - ``splits``: in-memory splits (``{"train", "holdout", "test"}`` -> split) instead of files;
      ``data_dir``: where to look first for the dataset files; ``download``: let torchvision
      (or Hugging Face ``datasets``) download the dataset when no copy is found.
    - ``holdout_size``, ``data_seed``: size and seed of the holdout carved out of the training
      set (default size: 5000 images, or the text dataset's ``TextSpec.holdout_size``). A main
      model that trained on any holdout sample is refused (``SplitOverlapError``).
    - ``seq_len``, ``max_vocab``: text only: tokens per episode (T) and the vocabulary's cap
      (defaults: the dataset's, ``dynalay_env.data.TEXT_DATASETS``).
    - ``max_episode_steps``: optional truncation below ``max_steps``.
    - ``sequential``: walk the split in order instead of drawing samples at random.
    - ``solver``: how loop actions run: ``fpi`` (plain per-sample iteration, the thesis's) or
      TorchDEQ's ``anderson`` / ``broyden`` (fewer iterations per loop, more overhead).
    - ``device``: ``auto`` (GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``...
    - ``pretrain_epochs`` (20), ``widths``: how to pre-train a main model when none is cached or
      shipped (a given ``widths`` also selects the cached or shipped model: only one with
      them); ``pretrain_limit_minutes``: refuse (``PretrainTooLongError``) a pre-training
      estimated to take longer (default ``$DYNALAY_PRETRAIN_LIMIT_MINUTES`` or 10).
    - ``progress``: print progress bars and where the model came from (default True).

    ## Info keys

    ``reset`` returns ``{"dataset_index": i}``. ``step`` returns ``{}`` mid-episode and, when
    the episode ends, Python scalars or numpy arrays
    (:meth:`~dynalay_env.core.DynaLayCore.episode_info`):

    - ``prediction``, ``label``: the answer and the truth (a language model's: the window's T
      tokens each); ``correct``: bool, or a language model's share of positions right;
    - ``total_cost``: the sum of the step costs; ``flops``: every FLOP spent on the sample, the
      straight pass included;
    - ``actions``: the decisions taken, in order; ``episode_steps``: how many;
    - ``iterations``: (n,) FPI iterations per block; ``residuals``: (n,) the last FPI residual
      per block;
    - ``dataset_index``: the sample's index in its source split (torchvision's, or the text's);
    - a language model only: ``nll``, the mean next-token negative log-likelihood in nats, and
      ``perplexity = exp(nll)``.

    ``step`` returns Python ``float``/``bool``; the vector env the same keys batched.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        dataset: str = "CIFAR10",
        *,
        mdp: MDPConfig | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        max_steps: int | None = None,
        penalty: str | None = None,
        shaping: str | None = None,
        observe_changes: bool | None = None,
        **kwargs: Any,
    ) -> None:
        settings = MDPConfig.from_kwargs(
            mdp,
            alpha=alpha,
            beta=beta,
            max_steps=max_steps,
            penalty=penalty,
            shaping=shaping,
            observe_changes=observe_changes,
        )
        self.core = build_core(1, dataset, mdp=settings, **kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = spaces.Discrete(self.core.n_actions)
        self._episode_over = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        rows = None if not options or "index" not in options else np.array([options["index"]])
        self.core.reset_slots(np.array([0]), self.np_random, rows)
        self._episode_over = False
        info = {"dataset_index": int(self.core.episode_info()["dataset_index"][0])}
        return self.core.observe()[0], info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._episode_over:
            raise RuntimeError("the episode is over: call reset() before step()")
        if np.ndim(action) != 0:
            raise ValueError(f"action must be a single integer, got shape {np.shape(action)}")
        result = self.core.step(np.array([action]))
        terminated, truncated = bool(result.terminated[0]), bool(result.truncated[0])
        info: dict[str, Any] = {}
        if terminated or truncated:
            self._episode_over = True
            info = {key: _scalar(value[0]) for key, value in result.episode.items()}
            info["actions"] = info["actions"][info["actions"] >= 0]
        return self.core.observe()[0], float(result.reward[0]), terminated, truncated, info


def _scalar(value: np.ndarray) -> Any:
    """Per-slot numpy values as Python scalars (arrays stay arrays)."""
    return value.item() if np.ndim(value) == 0 else value
