"""Shared training pieces (learning-rate schedule)."""


def test_lr_factor_warmup_then_cosine():
    from ctresample.training.common import lr_factor

    assert [lr_factor(s, 0.0, 4, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(10, 0.0, 4, 0.1) == 1.0
    assert abs(lr_factor(10, 0.5, 4, 0.1) - 0.55) < 1e-12
    assert abs(lr_factor(10, 1.0, 4, 0.1) - 0.1) < 1e-12
    assert lr_factor(10, 2.0, 4, 0.1) == lr_factor(10, 1.0, 4, 0.1)  # progress clipped
