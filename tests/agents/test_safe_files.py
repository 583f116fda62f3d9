"""A run directory runs none of its author's code: crafted files under eval, export, --resume and
sweep either fail with a clear error or load only their safe parts, and the marker file their
pickles would create never appears.

Each crafted file carries a pickle whose loading creates ``MARKER`` (``open(path, "w")``, no
shell): ``vecnormalize.pkl`` / ``replay_buffer.pkl`` (the files run directories held before),
an ``agent.zip`` whose ``data`` entry carries it as SB3's cloudpickled value (under a key the
project supplies, or under one it does not), and an ``agent.zip`` whose ``policy.pth`` is it.
Every crafted folder gets a manifest that matches it, as someone handing the directory over
would write: the checksums are no defence here. Each test also unpickles its payload once itself
(:func:`assert_live`), so that a loader which did unpickle the crafted file would have made the
marker the test asserts is absent.

``sweep`` reads a beta's run directory back when it exists: it resumes the run after its last
complete phase (loading that phase's folder, or an earlier phase's when the last did not finish),
then loads each beta's final agent to evaluate it.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import write_mnist_files
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import run_rl
from agents.agent_zip import read_agent_data
from agents.config import load_run_config
from agents.files import MODEL_FILE, PICKLED_FILES, RunDirectory, final_checkpoints, run_dir_of
from agents.normalization import NormalizerError, NormalizerState
from agents.replay_buffer import ARRAYS, ReplayBufferError, load_replay_buffer

TINY_FLAGS = [
    "--env", "DynaLay-MNIST-v0", "--device", "cpu", "--widths", "2", "2", "2",
    "--pretrain-epochs", "1", "--rounds", "1", "--total-timesteps", "32", "--num-envs", "4",
    "--holdout-size", "10", "--eval-size", "8", "--batch-size", "8",
]  # fmt: skip
BETA = "0.3"


class Payload:
    """Unpickled, creates the file ``path``: what a hostile pickle would do, made visible."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ----- fixtures and crafting ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_logdir(tmp_path_factory) -> Path:
    """A finished one-beta sweep on tiny MNIST: ``--logdir`` holding ``sweep_*/beta_0.3``."""
    root = tmp_path_factory.mktemp("safe-files")
    write_mnist_files(root / "data", n_train=30, n_test=10)
    logdir = root / "logdir"
    assert run_rl.main(sweep_argv(root / "data", logdir)) == 0
    return logdir


def sweep_argv(data: Path, logdir: Path) -> list[str]:
    return ["sweep", "--betas", BETA, *TINY_FLAGS, "--data-dir", str(data)] + [
        "--logdir", str(logdir), "--taus", "0.9",
    ]  # fmt: skip


def copy_logdir(sweep_logdir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the sweep's logdir (its configs naming the new place) and its beta's run."""
    logdir = tmp_path / "logdir"
    shutil.copytree(sweep_logdir, logdir)
    for config in logdir.rglob("config.yaml"):
        config.write_text(config.read_text().replace(str(sweep_logdir), str(logdir)))
    (sweep_dir,) = logdir.iterdir()
    return logdir, sweep_dir / f"beta_{BETA}"


def rewrite_manifest(folder: Path, files: list[str] | None = None) -> None:
    """The folder's manifest, made to match its files as they are now (``files``: the names
    it lists instead of the ones it listed)."""
    run = RunDirectory(run_dir_of(folder))
    manifest = json.loads((folder / "manifest.json").read_text())
    phase = folder.relative_to(run.checkpoints).as_posix()
    run.write_manifest(phase, files or list(manifest["files"]), manifest["state"])


def plant_pickle(
    run_dir: Path, marker: Path, name: str = "vecnormalize.pkl", folder: Path | None = None
) -> Path:
    """The final folder (or ``folder``) as a run from before this version left it, its pickle
    hostile."""
    folder = final_checkpoints(run_dir) if folder is None else folder
    plain = PICKLED_FILES[name]
    (folder / plain).unlink(missing_ok=True)
    (folder / name).write_bytes(pickle.dumps(Payload(marker)))
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    rewrite_manifest(folder, [n for n in listed if n != plain] + [name])
    return folder


def rewrite_agent_zip(folder: Path, change) -> None:
    """Rewrite ``agent.zip``'s entries: ``change(name, bytes) -> bytes``; then the manifest."""
    path = folder / "agent.zip"
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, change(name, content))
    rewrite_manifest(folder)


def serialized(marker: Path, kind: str) -> dict[str, str]:
    """SB3's form of a cloudpickled value in ``data``, the value being the payload."""
    encoded = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()
    return {":type:": kind, ":serialized:": encoded}


def with_data(change):
    """A ``rewrite_agent_zip`` change that edits the ``data`` JSON only."""

    def edit(name: str, content: bytes) -> bytes:
        if name != "data":
            return content
        data = json.loads(content)
        change(data)
        return json.dumps(data).encode()

    return edit


def assert_live(marker: Path, unpickle) -> None:
    """``unpickle()`` (what a loader that unpickled the crafted file would do) makes the
    marker: the test's ``not marker.exists()`` would have caught such a loader."""
    assert not marker.exists()
    unpickle()
    assert marker.is_file()
    marker.unlink()


def results_in(logdir: Path) -> dict[Path, bytes]:
    """Every results file under ``logdir``: a refused command writes none of them."""
    return {path: path.read_bytes() for path in logdir.rglob("results.*")}


def command(which: str, run_dir: Path, tmp_path: Path) -> list[str]:
    if which == "sweep":  # the sweep that made run_dir, again: it reads the beta's run back
        data = load_run_config(run_dir).data_dir
        return sweep_argv(Path(data), run_dir.parent.parent)
    return {
        "eval": ["eval", str(run_dir), "--device", "cpu", "--taus", "0.9"],
        "export": ["export", str(run_dir), "--output", str(tmp_path / "dynalay.pt")],
        "resume": ["--resume", str(run_dir)],
    }[which]


def assert_pickle_refused(which, name, folder, logdir, run_dir, marker, tmp_path, capsys):
    """``which`` on a run directory whose ``folder`` holds the crafted pickle ``name``: the
    payload never runs, exit 2 with the file and the convert remedy named, no traceback, no
    exported file and no results written; and the payload was live."""
    results = results_in(logdir)
    code = run_rl.main(command(which, run_dir, tmp_path))
    assert not marker.exists(), "the crafted file's payload ran"
    assert code == 2
    err = capsys.readouterr().err
    assert f"{folder} holds {name}" in err and "does not load" in err
    assert f"python run_rl.py convert {run_dir} --trust-pickles" in err
    assert "Traceback" not in err and not (tmp_path / "dynalay.pt").exists()
    assert results_in(logdir) == results
    assert_live(marker, lambda: pickle.loads((folder / name).read_bytes()))


# ----- pickles from before ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vecnormalize.pkl", "replay_buffer.pkl"])
@pytest.mark.parametrize("which", ["eval", "export", "resume", "sweep"])
def test_a_pickle_in_the_run_directory_is_refused_and_never_loaded(
    which, name, sweep_logdir, tmp_path, capsys
):
    logdir, run_dir = copy_logdir(sweep_logdir, tmp_path)
    marker = tmp_path / "marker"
    folder = plant_pickle(run_dir, marker, name)
    assert_pickle_refused(which, name, folder, logdir, run_dir, marker, tmp_path, capsys)


@pytest.mark.parametrize("name", ["vecnormalize.pkl", "replay_buffer.pkl"])
@pytest.mark.parametrize("which", ["resume", "sweep"])
def test_a_pickle_in_the_phase_a_resumed_run_goes_back_to_is_refused(
    which, name, sweep_logdir, tmp_path, capsys
):
    """The run's last phase did not finish (no manifest): ``--resume`` and ``sweep`` re-run it
    from the phase before, whose folder holds the pickle."""
    logdir, run_dir = copy_logdir(sweep_logdir, tmp_path)
    marker = tmp_path / "marker"
    (final_checkpoints(run_dir) / "manifest.json").unlink()
    folder = plant_pickle(run_dir, marker, name, RunDirectory(run_dir).phase_folder("pretrain"))
    assert_pickle_refused(which, name, folder, logdir, run_dir, marker, tmp_path, capsys)


def test_convert_needs_trust_then_writes_the_same_statistics_as_plain_files(
    sweep_logdir, tmp_path, capsys
):
    """A genuine ``vecnormalize.pkl`` (as runs before this version saved it) converts to the
    JSON the run saves now, byte for byte, and the converted run evaluates."""
    _, run_dir = copy_logdir(sweep_logdir, tmp_path)
    folder = final_checkpoints(run_dir)
    saved = (folder / "vecnormalize.json").read_bytes()
    stats = NormalizerState.load(folder / "vecnormalize.json")
    (folder / "vecnormalize.pkl").write_bytes(pickle.dumps(legacy_vec_normalize(stats)))
    (folder / "vecnormalize.json").unlink()
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    rewrite_manifest(folder, [n.replace(".json", ".pkl") for n in listed])

    assert run_rl.main(["convert", str(tmp_path)]) == 2  # without --trust-pickles: nothing
    assert "--trust-pickles" in capsys.readouterr().err
    assert (folder / "vecnormalize.pkl").is_file() and not (folder / "vecnormalize.json").exists()

    assert run_rl.main(["convert", str(tmp_path), "--trust-pickles"]) == 0
    assert (folder / "vecnormalize.json").read_bytes() == saved
    assert not (folder / "vecnormalize.pkl").exists()
    run = RunDirectory(run_dir)
    record = run.verify(folder.relative_to(run.checkpoints).as_posix())
    assert "vecnormalize.json" in record.files and "vecnormalize.pkl" not in record.files
    assert run_rl.main(command("eval", run_dir, tmp_path)) == 0


def legacy_vec_normalize(stats: NormalizerState) -> VecNormalize:
    """A VecNormalize holding ``stats``, as the trainer pickled it before (venv left out)."""
    size = stats.obs_rms.mean.shape[0]

    class Flat(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        action_space = gym.spaces.Discrete(2)

    wrapper = stats.wrap(DummyVecEnv([Flat]))
    wrapper.venv = None  # what VecNormalize.__getstate__ drops anyway
    return wrapper


# ----- agent.zip ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["eval", "export", "resume", "sweep"])
def test_an_agent_zip_with_a_pickled_entry_the_project_never_writes_is_refused(
    which, sweep_logdir, tmp_path, capsys
):
    logdir, run_dir = copy_logdir(sweep_logdir, tmp_path)
    marker = tmp_path / "marker"
    hostile = serialized(marker, "<class 'collections.OrderedDict'>")
    folder = final_checkpoints(run_dir)
    rewrite_agent_zip(folder, with_data(lambda d: d.update(extras=hostile)))
    results = results_in(logdir)
    code = run_rl.main(command(which, run_dir, tmp_path))
    assert not marker.exists(), "the crafted file's payload ran"
    assert code == 2
    err = capsys.readouterr().err
    assert (
        f"{folder / 'agent.zip'}: its data entry 'extras' is a pickled "
        "<class 'collections.OrderedDict'>" in err
    )
    assert "does not unpickle" in err and "do not use it" in err and "Traceback" not in err
    assert results_in(logdir) == results
    entry = read_agent_data(folder / "agent.zip")["extras"][":serialized:"]
    assert_live(marker, lambda: cloudpickle.loads(base64.b64decode(entry)))


@pytest.mark.parametrize("which", ["eval", "export", "resume", "sweep"])
def test_an_agent_zip_whose_pickled_entries_carry_a_payload_loads_only_its_safe_parts(
    which, sweep_logdir, tmp_path
):
    """Every pickled entry SB3 writes is supplied by the project, never read from the file:
    payloads in all of them run nothing, and the agent's weights still load (the sweep
    resumes the beta's run from the file, then evaluates the agent it loads from it again)."""
    logdir, run_dir = copy_logdir(sweep_logdir, tmp_path)
    marker = tmp_path / "marker"

    def poison(data: dict) -> None:
        for entry in data.values():
            if isinstance(entry, dict) and ":serialized:" in entry:
                entry[":serialized:"] = serialized(marker, entry[":type:"])[":serialized:"]

    folder = final_checkpoints(run_dir)
    rewrite_agent_zip(folder, with_data(poison))
    sweep_results = next(logdir.glob("sweep_*/results.md"))
    sweep_results.write_text("before\n")
    code = run_rl.main(command(which, run_dir, tmp_path))
    assert not marker.exists(), "the crafted file's payload ran"
    assert code == 0
    if which == "sweep":
        assert f"agent beta={BETA}" in sweep_results.read_text()
    poisoned = [
        entry[":serialized:"]
        for entry in read_agent_data(folder / "agent.zip").values()
        if isinstance(entry, dict) and ":serialized:" in entry
    ]
    assert len(poisoned) >= 3  # the spaces and the policy class at least
    for encoded in poisoned:
        assert_live(marker, lambda encoded=encoded: cloudpickle.loads(base64.b64decode(encoded)))


@pytest.mark.parametrize("which", ["eval", "sweep"])
def test_agent_tensors_holding_a_pickled_object_are_refused(which, sweep_logdir, tmp_path, capsys):
    _, run_dir = copy_logdir(sweep_logdir, tmp_path)
    marker = tmp_path / "marker"

    def policy_payload(name: str, content: bytes) -> bytes:
        if name != "policy.pth":
            return content
        buffer = io.BytesIO()
        torch.save({"weights": Payload(marker)}, buffer)
        return buffer.getvalue()

    folder = final_checkpoints(run_dir)
    rewrite_agent_zip(folder, policy_payload)
    code = run_rl.main(command(which, run_dir, tmp_path))
    assert not marker.exists(), "the crafted file's payload ran"
    assert code == 2
    err = capsys.readouterr().err
    assert f"{folder / 'agent.zip'} holds pickled objects besides tensors" in err
    assert "Traceback" not in err
    with zipfile.ZipFile(folder / "agent.zip") as archive:
        policy = archive.read("policy.pth")
    assert_live(marker, lambda: torch.load(io.BytesIO(policy), weights_only=False))


def test_an_agent_zip_for_another_model_is_refused_in_the_projects_words(
    sweep_logdir, tmp_path, capsys
):
    _, run_dir = copy_logdir(sweep_logdir, tmp_path)

    def wider(data: dict) -> None:
        data["observation_space"]["_shape"] = [999]

    rewrite_agent_zip(final_checkpoints(run_dir), with_data(wider))
    assert run_rl.main(command("export", run_dir, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "the agent's observation_space has shape (999,), but the run's main model" in err


# ----- the statistics' format ---------------------------------------------------------------------
def test_plain_statistics_normalise_as_vec_normalize_does(sweep_logdir, tmp_path):
    folder = final_checkpoints(next(sweep_logdir.glob(f"sweep_*/beta_{BETA}")))
    stats = NormalizerState.load(folder / "vecnormalize.json")
    wrapper = legacy_vec_normalize(stats)
    assert NormalizerState.of(wrapper).to_json() == stats.to_json()
    observations = np.random.default_rng(0).uniform(-1, 5, (64, stats.obs_rms.mean.shape[0]))
    observations = observations.astype(np.float32)
    assert np.array_equal(stats.normalize_obs(observations), wrapper.normalize_obs(observations))

    broken = json.loads((folder / "vecnormalize.json").read_text())
    broken["obs_rms"]["var"] = broken["obs_rms"]["var"][:-1]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(NormalizerError, match="broken.json is malformed"):
        NormalizerState.load(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(NormalizerError, match="not DynaLay's observation statistics"):
        NormalizerState.load(tmp_path / "other.json")


def test_convert_turns_a_replay_buffer_pickle_into_the_same_arrays(tmp_path):
    """A run from before the manifests (files flat in ``checkpoints/``) with a DQN replay buffer
    pickle: converted, its arrays, ``pos`` and ``full`` come back into a fresh buffer unchanged."""
    space = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
    buffer = ReplayBuffer(16, space, gym.spaces.Discrete(3), device="cpu", n_envs=2)
    rng = np.random.default_rng(0)
    for _ in range(11):  # wraps around: pos 3, full
        observations = rng.uniform(-1, 1, (2, 5)).astype(np.float32)
        buffer.add(observations, observations + 1, rng.integers(0, 3, (2, 1)), rng.random(2),
                   rng.random(2) < 0.5, [{}, {}])  # fmt: skip
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "replay_buffer.pkl").write_bytes(pickle.dumps(buffer))
    assert run_rl.main(["convert", str(tmp_path / "run"), "--trust-pickles"]) == 0
    assert not (folder / "replay_buffer.pkl").exists()

    fresh = ReplayBuffer(16, space, gym.spaces.Discrete(3), device="cpu", n_envs=2)
    load_replay_buffer(SimpleNamespace(replay_buffer=fresh), folder / "replay_buffer.npz")
    assert (fresh.pos, fresh.full) == (buffer.pos, buffer.full) == (3, True)
    for name in ARRAYS:
        assert np.array_equal(getattr(fresh, name), getattr(buffer, name)), name
    smaller = ReplayBuffer(8, space, gym.spaces.Discrete(3), device="cpu", n_envs=2)
    with pytest.raises(ReplayBufferError, match="observations is float32"):
        load_replay_buffer(SimpleNamespace(replay_buffer=smaller), folder / "replay_buffer.npz")


@pytest.mark.parametrize("which", ["eval", "export", "resume", "sweep"])
def test_a_main_model_file_carrying_a_pickle_is_refused_in_the_projects_words(
    which, sweep_logdir, tmp_path, capsys
):
    """A final main_model.pt replaced by a pickle (its manifest rewritten to match): read
    weights-only, so nothing runs, and every command exits 2 naming the file, no traceback."""
    logdir, run_dir = copy_logdir(sweep_logdir, tmp_path)
    marker = tmp_path / "marker"
    folder = final_checkpoints(run_dir)
    torch.save({"state_dict": Payload(marker)}, folder / MODEL_FILE)
    rewrite_manifest(folder)
    results = results_in(logdir)
    code = run_rl.main(command(which, run_dir, tmp_path))
    assert not marker.exists(), "the crafted file's payload ran"
    assert code == 2
    err = capsys.readouterr().err
    assert str(folder / MODEL_FILE) in err and "Traceback" not in err
    assert results_in(logdir) == results and not (tmp_path / "dynalay.pt").exists()
    assert_live(marker, lambda: torch.load(folder / MODEL_FILE, weights_only=False))
