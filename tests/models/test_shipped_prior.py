"""The shipped default prior: loads offline from the package and round-trips the bundled sample."""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from ctresample.models.prior import DEFAULT_PRETRAINED, LatentDiffusionPrior  # noqa: E402

# pooled PSNR measured on data/sample_ct (4 slices of the test subject, 256 grid) by
# ctresample.training.model_card (MODEL_CARD.md, metrics.json), minus a margin for platforms/BLAS
SAMPLE_PSNR_MIN_DB = 38.79 - 0.5  # measured 38.79 dB (pooled, 4 slices), CPU, torch 2.13

pytestmark = pytest.mark.skipif(not (DEFAULT_PRETRAINED / "prior_config.json").exists(),
                                reason="no shipped model in ctresample/pretrained/ldm-ct-256")


@pytest.fixture(scope="module")
def shipped():
    return LatentDiffusionPrior.from_pretrained()


def test_loads_offline_and_small(shipped, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    total = sum(f.stat().st_size for f in DEFAULT_PRETRAINED.rglob("*") if f.is_file())
    assert total < 25 * 2**20
    assert shipped.image_size == 256
    assert shipped.latent_shape[1:] == (64, 64)
    assert not any(p.requires_grad for p in shipped.parameters())


def test_round_trip_bundled_sample(shipped, sample_ct):
    from ctresample.hu_window import clip_hu, hu_to_zero_one
    from ctresample.io import read_image
    from ctresample.metrics import psnr_from_mse
    from ctresample.workflows.preprocess import clip_padding, resample_to_grid

    vol = read_image(sample_ct)
    grid, _ = resample_to_grid(clip_padding(vol.hu), vol.pixel_spacing, size=256)
    hu = clip_hu(torch.as_tensor(np.asarray(grid, np.float32)))[:, None]
    with torch.no_grad():
        z = shipped.encode(hu)
        assert z.shape == (len(hu), *shipped.latent_shape)
        rec = clip_hu(shipped.decode(z))
    assert rec.shape == hu.shape
    psnr = float(psnr_from_mse(float((hu_to_zero_one(rec) - hu_to_zero_one(hu)).pow(2).mean())))
    if SAMPLE_PSNR_MIN_DB is not None:
        assert psnr > SAMPLE_PSNR_MIN_DB
    assert psnr > 30.0
