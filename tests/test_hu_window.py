import numpy as np
import torch

from ctresample.hu_window import HU_MAX, HU_MIN, clip_hu, hu_to_unit, hu_to_zero_one, unit_to_hu, zero_one_to_hu


def test_window_end_points():
    assert float(hu_to_unit(torch.tensor(HU_MIN))) == -1.0
    assert float(hu_to_unit(torch.tensor(HU_MAX))) == 1.0
    assert abs(float(hu_to_unit(np.float64(0.0))) + 0.49988) < 1e-5  # water
    assert hu_to_zero_one(np.array([HU_MIN, HU_MAX])).tolist() == [0.0, 1.0]


def test_round_trips_numpy_and_torch():
    hu = np.linspace(-3000, 5000, 101)
    np.testing.assert_allclose(unit_to_hu(hu_to_unit(hu)), hu, atol=1e-9)
    np.testing.assert_allclose(zero_one_to_hu(hu_to_zero_one(hu)), hu, atol=1e-9)
    t = torch.linspace(-1024, 3071, 17, dtype=torch.float64, requires_grad=True)
    y = unit_to_hu(hu_to_unit(t))
    torch.testing.assert_close(y, t)
    y.sum().backward()  # differentiable
    torch.testing.assert_close(t.grad, torch.ones_like(t))


def test_clip():
    assert clip_hu(np.array([-3024.0, 0.0, 4000.0])).tolist() == [HU_MIN, 0.0, HU_MAX]
    assert clip_hu(torch.tensor([-2048.0])).item() == HU_MIN
