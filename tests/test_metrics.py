"""Metrics against known values: identical images, a known offset, clipping to the HU window."""
import math

import numpy as np
import pytest
import torch

from ctresample.metrics import batch_metrics, psnr, rmse_hu, slice_metrics, ssim, to_unit_window


@pytest.fixture
def image(rng):
    return rng.uniform(-1000, 1500, size=(32, 32)).astype(np.float32)


def test_identical_images(image):
    m = slice_metrics(image, image)
    assert m["psnr"] == math.inf
    assert m["ssim"] == pytest.approx(1.0)
    assert m["rmse_hu"] == 0.0


@pytest.mark.parametrize("offset", [1.0, 100.0, -250.0])
def test_constant_offset(offset):
    ref = np.zeros((32, 32), np.float32)  # water, well inside the window
    rec = ref + offset
    assert rmse_hu(rec, ref) == pytest.approx(abs(offset))
    # window width 4095 HU scaled to 1: PSNR = 20 log10(4095 / RMSE)
    assert psnr(rec, ref) == pytest.approx(20 * math.log10(4095 / abs(offset)), rel=1e-9)
    # a constant offset on a flat image: luminance term only, SSIM slightly below 1
    assert 0.9 < ssim(rec, ref) < 1.0


def test_psnr_matches_rmse_identity(image, rng):
    rec = image + rng.normal(0, 30, size=image.shape)
    m = slice_metrics(rec, image)
    assert m["psnr"] == pytest.approx(20 * math.log10(4095 / m["rmse_hu"]), rel=1e-9)


def test_skimage_on_the_unit_window(image, rng):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rec = image + rng.normal(0, 50, size=image.shape)
    a, b = (image + 1024) / 4095, np.clip(rec, -1024, 3071)
    b = (b + 1024) / 4095
    assert psnr(rec, image) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0))
    assert ssim(rec, image) == pytest.approx(structural_similarity(a, b, data_range=1.0))


def test_values_outside_the_window_are_clipped():
    ref = np.full((16, 16), 3071.0)
    rec = np.full((16, 16), 5000.0)  # metal beyond the 12-bit window counts as the window's top
    assert slice_metrics(rec, ref)["rmse_hu"] == 0.0
    assert to_unit_window(np.array([-3000.0, -1024.0, 3071.0, 9000.0])).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_tensors_batches_and_bad_input(image):
    t = torch.from_numpy(image)[None, None]
    assert slice_metrics(t, image)["psnr"] == math.inf
    stack = np.stack([image, image + 100])
    ms = batch_metrics(torch.from_numpy(stack)[:, None], np.stack([image, image]))
    assert [m["rmse_hu"] for m in ms] == pytest.approx([0.0, 100.0], abs=1e-3)
    with pytest.raises(ValueError, match="shape"):
        slice_metrics(image, image[:16])
    with pytest.raises(ValueError, match="NaN"):
        slice_metrics(np.full_like(image, np.nan), image)
