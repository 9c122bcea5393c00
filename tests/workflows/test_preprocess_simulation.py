"""preprocess (padding clip, grid policy) and simulation (noise models)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ctresample.workflows.preprocess import clip_padding, resample_to_grid
from ctresample.workflows.simulation import NoiseSpec, parse_noise, simulate_sinogram
from operators import ParallelBeamGeometry, hu_to_mu, projector_for


def test_clip_padding():
    a = np.array([-3024, -2048, -1500, -1024, -1000, 0, 3000], np.float32)
    np.testing.assert_array_equal(clip_padding(a), [-1024, -1024, -1024, -1024, -1000, 0, 3000])
    assert torch.equal(clip_padding(torch.tensor([-2048.0, 5.0])), torch.tensor([-1024.0, 5.0]))


def test_resample_policy_square_fov_padded_with_air():
    img = np.full((20, 10), 40.0, np.float32)  # 20 x 1.0 mm rows, 10 x 1.5 mm columns -> 20 x 15 mm
    out, p = resample_to_grid(img, (1.0, 1.5), size=40)
    assert out.shape == (1, 40, 40) and p == pytest.approx(0.5)
    # the slice spans columns 5 mm .. 20 mm of the 20 mm FOV -> grid columns 5..35 (edges interpolated)
    np.testing.assert_allclose(out[0, 2:38, 8:32], 40.0, atol=1e-3)
    np.testing.assert_allclose(out[0, :, :4], -1024.0)
    np.testing.assert_allclose(out[0, :, 36:], -1024.0)
    # shrinking is antialiased and keeps flat HU
    big = np.full((3, 64, 64), -500.0, np.float32)
    out, p = resample_to_grid(big, 0.5, size=16)
    assert out.shape == (3, 16, 16) and p == pytest.approx(2.0)
    np.testing.assert_allclose(out[:, 1:-1, 1:-1], -500.0, atol=1e-3)


def test_resample_is_centred_and_fov_crops():
    img = np.zeros((32, 32), np.float32)
    img[16:, 16:] = 100.0  # a quadrant: the centre of the grid is the corner
    for size in (8, 16, 64):
        out, _ = resample_to_grid(img, 1.0, size=size)
        o = out[0]
        c = size // 2
        # separable blur of a step g: g(a) + g(-a) = 1 on both axes when the grid is centred
        np.testing.assert_allclose(o[c, c] + o[c - 1, c] + o[c, c - 1] + o[c - 1, c - 1], 100.0, atol=1e-3)
        np.testing.assert_allclose(o[c - 1, c], o[c, c - 1], atol=1e-3)
        assert o[c - 2, c - 2] < 1e-3 and abs(o[c + 1, c + 1] - 100) < 1e-3
    out, p = resample_to_grid(img, 1.0, size=16, fov_mm=16.0)  # central 16 mm only, 1 mm pixels
    assert p == 1.0
    np.testing.assert_allclose(out[0], img[8:24, 8:24], atol=1e-3)
    with pytest.raises(ValueError, match="pixel_spacing"):
        resample_to_grid(img, (0, 1))


def test_parse_noise():
    assert parse_noise(None) is None and parse_noise("none") is None
    assert parse_noise("gaussian:0.01") == NoiseSpec("gaussian", 0.01)
    assert parse_noise(" Poisson:1e5 ") == NoiseSpec("poisson", 1e5)
    for bad, msg in [("gauss:1", "unknown noise model"), ("gaussian", "needs a level"), ("poisson:abc", "not a number"),
                     ("poisson:0", "must be > 0"), ("gaussian:-1", ">= 0")]:
        with pytest.raises(ValueError, match=msg):
            parse_noise(bad)


def _phantom(n=16):
    x = torch.full((2, 1, n, n), -1000.0)
    x[:, :, 4:12, 4:12] = 0.0
    x[1, :, 6:10, 6:10] = 1000.0
    return x


def test_simulate_clean_noisy_deterministic():
    geo = ParallelBeamGeometry(image_size=16, pixel_size=2.0, n_views=9)
    x = _phantom()
    clean = simulate_sinogram(x, geo)
    assert clean.shape == (2, 1, 9, geo.n_detectors)
    torch.testing.assert_close(clean, projector_for(geo)(hu_to_mu(x)))
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    noisy = simulate_sinogram(x, geo, noise="gaussian:0.05", generator=g())
    torch.testing.assert_close(noisy, simulate_sinogram(x, geo, noise="gaussian:0.05", generator=g()))
    rel = (noisy - clean).flatten(1).std(dim=1) / clean.flatten(1).amax(dim=1)
    np.testing.assert_allclose(rel.numpy(), 0.05, rtol=0.3)
    pois = simulate_sinogram(x, geo, noise="poisson:1e4", generator=g())
    assert torch.isfinite(pois).all() and 0 < (pois - clean).abs().mean() < 0.1
    hi = simulate_sinogram(x, geo, noise="poisson:1e9", generator=g())
    assert (hi - clean).abs().max() < 1e-2
    with pytest.raises(ValueError, match="geometry expects"):
        simulate_sinogram(x[..., :8, :8], geo)
    with pytest.raises(ValueError, match="NaN"):
        simulate_sinogram(x * float("nan"), geo)
