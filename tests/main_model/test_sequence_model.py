"""Tests of the sequence network (the LSTM variant): contraction, implicit gradients, grouping by
action, causality, FLOPs and checkpoints with their vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import jacobian_norm_by_power_iteration

from main_model import (
    CheckpointError,
    ContractiveConv,
    DynaLaySeqConfig,
    DynaLaySeqNet,
    load_main_model,
    save_main_model,
)
from main_model.loop_operators import circulant_operator_norm

TINY_LM = DynaLaySeqConfig(vocab_size=11, seq_len=6, embed_dim=4, widths=(3, 4, 5), tol=1e-3)
TINY_CLASSIFY = DynaLaySeqConfig(
    vocab_size=11, seq_len=6, task="classify", num_classes=2, embed_dim=4, widths=(3, 4, 5)
)


def make_net(config: DynaLaySeqConfig = TINY_LM, seed: int = 0, weight_scale: float = 4.0):
    """A random network whose loop convolutions sit at the norm bound (scaled up, rescaled)."""
    torch.manual_seed(seed)
    vocabulary = tuple(f"w{i}" for i in range(config.vocab_size))
    net = DynaLaySeqNet(config, vocabulary)
    with torch.no_grad():
        for block in net.blocks:
            block.loop_conv.weight.mul_(weight_scale)
    return net.eval()


def tokens_for(config: DynaLaySeqConfig, batch: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, config.seq_len), generator=generator)


def dense_matrix(conv: ContractiveConv, weight: torch.Tensor, circular: bool = False):
    """The convolution by ``weight`` on (C, T) sequences as a dense (C T, C T) matrix."""
    channels, length = weight.shape[0], conv.size
    if circular:  # on the circle of length T + k - 1

        def apply(x):
            padded = torch.nn.functional.pad(x, (conv.kernel_size - 1, 0), mode="circular")
            return torch.nn.functional.conv1d(padded, weight)

        length += conv.kernel_size - 1
    else:

        def apply(x):
            return conv.conv(x, weight)

    dense = torch.autograd.functional.jacobian(apply, torch.zeros(1, channels, length))
    return dense.reshape(channels * length, channels * length)


# ----- contraction --------------------------------------------------------------------------------
@pytest.mark.parametrize("train_mode", [False, True])
def test_fpi_map_is_a_contraction_in_the_hidden_sequence(train_mode):
    net = make_net(weight_scale=25.0).train(train_mode)
    tokens = tokens_for(TINY_LM, 3)
    x = net.embed(tokens)
    for block in net.blocks:
        u = block.inject(x).detach()
        weight = block.loop_conv.effective_weight().detach()
        h = torch.randn_like(u)  # a random point: the bound holds everywhere, not only at H*

        def f(h, block=block, u=u, weight=weight):
            return block.f(h, u, weight)

        lipschitz = jacobian_norm_by_power_iteration(f, h)
        assert lipschitz <= TINY_LM.contraction * (1 + 1e-3)
        x = block.straight(u)


def test_fft_bound_is_above_the_causal_convolutions_norm_and_exact_on_the_circle():
    torch.manual_seed(0)
    conv = ContractiveConv(3, size=7, bound=0.9, kernel_size=3, method="fft", dims=1).eval()
    weight = conv.weight.detach()
    bound = circulant_operator_norm(weight, conv.size).item()
    causal = torch.linalg.matrix_norm(dense_matrix(conv, weight), ord=2).item()
    circular = torch.linalg.matrix_norm(dense_matrix(conv, weight, circular=True), ord=2).item()
    assert bound == pytest.approx(circular, rel=1e-5)
    assert causal <= bound * (1 + 1e-6)
    effective = conv.effective_weight().detach()
    assert torch.linalg.matrix_norm(dense_matrix(conv, effective), ord=2) <= 0.9 * (1 + 1e-5)


def test_power_iteration_is_refused_for_sequences():
    with pytest.raises(ValueError, match="dims must be 2, or 1 with method 'fft'"):
        ContractiveConv(3, size=7, bound=0.9, method="power", dims=1)


# ----- paths --------------------------------------------------------------------------------------
def test_straight_path_is_the_plain_stacked_lstm():
    net = make_net()
    tokens = tokens_for(TINY_LM, 4)
    with torch.no_grad():
        x = net.embedding(tokens)  # (B, T, E)
        for block in net.blocks:
            x, _ = block.lstm(x)
        expected = net.head(x).transpose(1, 2)  # (B, V, T)
        assert torch.equal(net.straight(tokens).state.logits, expected)


def test_loop_reaches_a_fixed_point_of_every_looped_layer():
    net = make_net()
    with torch.no_grad():
        output = net.step(net.straight(tokens_for(TINY_LM, 5)).state, torch.full((5,), 3))
        assert (output.state.residual < TINY_LM.tol).all() and not output.diverged.any()
        for index, block in enumerate(net.blocks):
            h, u = output.state.z[index], output.state.injection[index]
            relative = (block.f(h, u) - h).flatten(1).norm(dim=1) / h.flatten(1).norm(dim=1)
            assert (relative < TINY_LM.tol).all()
            assert h.abs().max() <= 1.0  # hardtanh keeps the state in the LSTM's range


@pytest.mark.parametrize("action", [0, 1, 2, 3])
def test_language_model_never_sees_the_tokens_it_predicts(action):
    net = make_net()
    tokens = tokens_for(TINY_LM, 2)
    changed = tokens.clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % TINY_LM.vocab_size  # change positions 3.. only
    with torch.no_grad():
        a = net(tokens, torch.full((2,), action))
        b = net(changed, torch.full((2,), action))
    assert torch.allclose(a[:, :, :3], b[:, :, :3], atol=1e-6)  # positions 0..2 unchanged
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:])


def unrolled_logits(net: DynaLaySeqNet, tokens: torch.Tensor, iterations: int) -> torch.Tensor:
    """Reference: loop every layer by plain autograd through ``iterations`` applications of f."""
    x = net.embed(tokens)
    for block in net.blocks:
        u = block.inject(x)
        weight = block.loop_conv.effective_weight()
        h = block.straight(u)
        for _ in range(iterations):
            h = block.f(h, u, weight)
        x = h
    return net.readout(x)


@pytest.mark.parametrize("config", [TINY_LM, TINY_CLASSIFY], ids=["lm", "classify"])
def test_implicit_gradients_match_unrolled_backprop_in_float64(config):
    precise = {"tol": 1e-13, "max_iter": 400, "backward_tol": 1e-13, "backward_max_iter": 400}
    config = DynaLaySeqConfig(**{**config.to_dict(), **precise})
    net = make_net(config).double()
    tokens = tokens_for(config, 3)
    logits_shape = net(tokens).shape
    weights = torch.randn(logits_shape, dtype=torch.float64)

    def gradients(logits_fn):
        net.zero_grad()
        (logits_fn() * weights).sum().backward()
        return [p.grad.clone() for p in net.parameters()]

    implicit = gradients(lambda: net(tokens, torch.full((3,), config.n_blocks)))
    unrolled = gradients(lambda: unrolled_logits(net, tokens, iterations=400))
    names = [name for name, _ in net.named_parameters()]
    for name, a, b in zip(names, implicit, unrolled, strict=True):
        error = (a - b).norm() / b.norm().clamp_min(1e-30)
        assert error < 1e-4, f"{name}: relative gradient error {error:.2e}"
        assert b.norm() > 0, f"{name}: no gradient reached it"


@pytest.mark.parametrize("config", [TINY_LM, TINY_CLASSIFY], ids=["lm", "classify"])
def test_mixed_action_batch_equals_each_sample_alone(config):
    net = make_net(config)
    tokens = tokens_for(config, 8)
    actions = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    with torch.no_grad():
        batched = net.step(net.straight(tokens).state, actions)
        for i in range(8):
            alone = net.step(net.straight(tokens[i : i + 1]).state, actions[i : i + 1])
            assert torch.allclose(batched.state.logits[i], alone.state.logits[0], atol=1e-5)
            assert batched.flops[i] == alone.flops[0]
            assert torch.equal(batched.iterations[i], alone.iterations[0])
            for z_batched, z_alone in zip(batched.state.z, alone.state.z, strict=True):
                assert torch.allclose(z_batched[i], z_alone[0], atol=1e-5)


def test_flops_equal_a_hand_count_on_a_tiny_network():
    # Vocabulary 9, T = 5, embedding 3, layers of 2 and 4 hidden units, kernel 3, LM head.
    config = DynaLaySeqConfig(
        vocab_size=9, seq_len=5, embed_dim=3, widths=(2, 4), max_iter=7, tol=1e-4
    )
    net = make_net(config)
    # LSTM step: 4 gates of H units, 2 FLOPs per MAC over (I + H) inputs, 2 biases per gate unit.
    lstm_1 = 5 * (2 * (4 * 2) * (3 + 2) + 2 * (4 * 2))  # 5 * (80 + 16) = 480
    lstm_2 = 5 * (2 * (4 * 4) * (2 + 4) + 2 * (4 * 4))  # 5 * (192 + 32) = 1120
    iterate_1 = 2 * (2 * 3) * 2 * 5  # 120: 2 FLOPs per MAC, 2*3 MACs per output, 2*5 outputs
    iterate_2 = 2 * (4 * 3) * 4 * 5  # 480
    head = 5 * (2 * 4 * 9 + 9)  # 405: a linear layer with bias at each of the 5 positions
    tokens = tokens_for(config, 3)
    with torch.no_grad():
        straight = net.straight(tokens)
        step = net.step(straight.state, torch.tensor([0, 1, 2]))
    assert straight.flops.tolist() == [lstm_1 + lstm_2 + head] * 3 == [2005] * 3
    its = step.iterations.tolist()
    assert step.flops.tolist() == [
        0,
        lstm_2 + its[1][0] * iterate_1 + head,
        lstm_2 + its[2][0] * iterate_1 + its[2][1] * iterate_2 + head,
    ]
    assert net.max_step_flops() == lstm_2 + 7 * (iterate_1 + iterate_2) + head
    classify_config = {**config.to_dict(), "task": "classify", "num_classes": 2}
    classify = DynaLaySeqNet(DynaLaySeqConfig(**classify_config))
    assert classify.head_flops == 2 * 4 * 2 + 2  # one readout of the time average, 2 classes


def test_observation_parts_have_the_declared_widths():
    for config, width in ((TINY_LM, 8), (TINY_CLASSIFY, 2)):
        net = make_net(config)
        state = net.straight(tokens_for(config, 3)).state
        assert net.probability_features == width
        probabilities = state.class_probabilities()
        assert probabilities.shape == (3, width)
        assert (probabilities >= 0).all() and (probabilities <= 1).all()
        assert state.pooled().shape == (3, sum(config.widths))


def test_bad_inputs_and_configs_give_clear_errors():
    with pytest.raises(ValueError, match="vocabulary needs >= 8 tokens"):
        DynaLaySeqConfig(vocab_size=5, seq_len=4)  # the observation shows 8 probabilities
    net = make_net()
    with pytest.raises(ValueError, match=r"inputs must be \(B, 6\) int64 token ids"):
        net.straight(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"inputs must be \(B, 6\) int64 token ids"):
        net.straight(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="task must be one of"):
        DynaLaySeqConfig(task="translate")
    with pytest.raises(ValueError, match="vocabulary has 3 tokens"):
        DynaLaySeqNet(TINY_LM, ("a", "b", "c"))


# ----- checkpoints --------------------------------------------------------------------------------
def test_save_load_round_trips_with_the_vocabulary(tmp_path: Path):
    net = make_net()
    path = save_main_model(net, tmp_path / "model.pt", metadata={"dataset": "tiny"})
    loaded, metadata = load_main_model(path, expected_config=TINY_LM)
    assert isinstance(loaded, DynaLaySeqNet) and loaded.config == net.config
    assert loaded.vocabulary == net.vocabulary and metadata == {"dataset": "tiny"}
    tokens, actions = tokens_for(TINY_LM, 4), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert torch.equal(net(tokens, actions), loaded(tokens, actions))


def test_a_checkpoint_whose_vocabulary_does_not_fit_is_refused(tmp_path: Path):
    path = save_main_model(make_net(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["vocabulary"] = payload["vocabulary"][:-1]
    torch.save(payload, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match="vocabulary does not match its model"):
        load_main_model(tmp_path / "short.pt")
    other = DynaLaySeqConfig(**{**TINY_LM.to_dict(), "seq_len": 9})
    with pytest.raises(CheckpointError, match="seq_len: checkpoint 6 != expected 9"):
        load_main_model(path, expected_config=other)
