"""Shared training pieces (learning-rate schedule)."""
import pytest


def test_lr_factor_warmup_then_cosine():
    from ctresample.training.loop import lr_factor

    assert [lr_factor(s, 0.0, 4, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(10, 0.0, 4, 0.1) == 1.0
    assert abs(lr_factor(10, 0.5, 4, 0.1) - 0.55) < 1e-12
    assert abs(lr_factor(10, 1.0, 4, 0.1) - 0.1) < 1e-12
    assert lr_factor(10, 2.0, 4, 0.1) == lr_factor(10, 1.0, 4, 0.1)  # progress clipped


def test_ema_is_diffusers_emamodel_with_the_trainers_schedule():
    """decay_n = min(decay, (1 + n) / (10 + n)) after n updates; frozen parameters are copied."""
    import torch
    from diffusers.training_utils import EMAModel

    from ctresample.training.loop import _load_ema_state, ema_model, make_ema

    net = torch.nn.Linear(2, 1)
    ema = make_ema(net, decay=0.9)
    assert isinstance(ema, EMAModel)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.step(net.parameters())
    d1 = min(0.9, 2 / 11)
    torch.testing.assert_close(ema_model(ema, net).weight, d1 * start + (1 - d1) * torch.ones_like(start))
    assert ema.cur_decay_value == d1
    for _ in range(49):
        ema.step(net.parameters())
    assert ema.cur_decay_value == min(0.9, 51 / 60)  # n = 50 updates
    for _ in range(50):
        ema.step(net.parameters())
    assert ema.cur_decay_value == 0.9
    # the checkpoint format of the trainers before EMAModel still resumes
    old = {"decay": 0.9, "num_updates": 7, "model": {"weight": torch.full((1, 2), 3.0), "bias": torch.zeros(1)}}
    _load_ema_state(ema, old, net)
    assert ema.optimization_step == 7 and torch.equal(ema_model(ema, net).weight, torch.full((1, 2), 3.0))


def test_make_accelerator_reads_yaml_no_as_no_mixed_precision():
    """``mixed_precision: no`` in YAML arrives as False; it means no mixed precision, not an error."""
    pytest.importorskip("accelerate")
    from ctresample.training.loop import make_accelerator

    assert make_accelerator(0, None, False).mixed_precision == "no"
