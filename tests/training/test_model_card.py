import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from ctresample.models.prior import LatentDiffusionPrior  # noqa: E402
from ctresample.training.model_card import roundtrip_metrics, sample_unconditional, ship, write_card  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return LatentDiffusionPrior.tiny(seed=1, image_size=32)


def test_roundtrip_metrics_shapes(tiny):
    hu = np.full((3, 32, 32), -1024.0, np.float32)
    hu[:, 8:24, 8:24] = 40.0
    m = roundtrip_metrics(tiny, hu)
    assert m["slices"] == 3 and m["reconstruction"].shape == (3, 32, 32)
    assert np.isfinite([m["psnr_db_mean"], m["ssim_mean"], m["rmse_hu"]]).all()


def test_unconditional_samples(tiny):
    s = sample_unconditional(tiny, n=3, steps=3, seed=0, batch=2)
    assert s.shape == (3, 32, 32) and np.isfinite(s).all()
    np.testing.assert_array_equal(s, sample_unconditional(tiny, n=3, steps=3, seed=0, batch=2))


def test_ship_fp16_and_decoder_check(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "src", extra={"diffusion_training": {"steps": 1}})
    dest = ship(tmp_path / "src", tmp_path / "dest")
    q = LatentDiffusionPrior.from_pretrained(dest)
    assert q.extra["diffusion_training"]["steps"] == 1
    # a decoder-only fine-tune with the same encoder combines; another autoencoder does not
    vae = LatentDiffusionPrior.tiny(seed=1, image_size=32).vae
    with torch.no_grad():
        vae.decoder.conv_out.weight.add_(0.01)
    vae.save_pretrained(tmp_path / "ft" / "vae")
    (tmp_path / "ft" / "summary.json").write_text(json.dumps({"steps": 5}))
    shipped = ship(tmp_path / "src", tmp_path / "d2", decoder_from=tmp_path / "ft" / "vae")
    q = LatentDiffusionPrior.from_pretrained(shipped)
    assert q.extra["decoder_finetune"]["steps"] == 5
    LatentDiffusionPrior.tiny(seed=2, image_size=32).vae.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="encoder"):
        ship(tmp_path / "src", tmp_path / "d3", decoder_from=tmp_path / "other")


def test_card_keeps_hand_written_notes(tmp_path):
    rt = {"slices": 2, "psnr_db_mean": 40.0, "psnr_db_min": 39.0, "psnr_db_pooled": 40.0, "ssim_mean": 0.97,
          "ssim_min": 0.96, "rmse_hu": 40.0}
    m = {"latent_shape": [4, 64, 64], "size_mb": 7.0, "vae_params": 1, "unet_params": 2, "latent_scale": 1.0,
         "roundtrip_test": rt, "sampling": {"n": 8, "ddim_steps": 50, "seed": 0, "seconds": 1.0},
         "sample_stats_hu": {"mean": 0, "p1": 0, "p99": 0}, "real_stats_hu": {"mean": 0, "p1": 0, "p99": 0},
         "extra": {}}
    card = write_card(m, tmp_path / "MODEL_CARD.md")
    text = card.read_text()
    assert "40.00" in text
    card.write_text(text.replace("_(what the sample grid shows: to be written after looking at samples.jpg)_",
                                 "hand notes"))
    assert "hand notes" in write_card(m, card).read_text()
