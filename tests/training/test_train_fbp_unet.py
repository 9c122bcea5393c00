"""FBP-UNet training: a tiny run beats FBP and its exported weights load as the fbp-unet method."""
import numpy as np
import torch

import ctresample
from operators import ParallelBeamGeometry, hu_to_mu, projector_for


def test_tiny_training_run_improves_on_fbp(tmp_path):
    from ctresample.training.fbp_unet import train_fbp_unet

    g = np.random.default_rng(0)
    hu = np.full((12, 32, 32), -1000.0, np.float32)
    for k in range(12):
        r0, c0 = g.integers(4, 12, size=2)
        hu[k, r0:r0 + 16, c0:c0 + 16] = 60.0
    cfg = dict(output_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"), n_views=10, channels=[8, 16],
               norm_groups=4, crop=None, batch_size=4, max_steps=40, val_every=1000, val_slices=4, lr=3e-3,
               noise_probability=0.0, warmup_steps=5, max_minutes=5, num_threads=1)
    summary = train_fbp_unet(cfg, train_hu=hu, val_hu=hu[:4], progress=False)
    assert summary["steps"] == 40
    assert summary["val_psnr_db"] > summary["val_fbp_psnr_db"]
    geom = ParallelBeamGeometry(image_size=32, n_views=10)
    y = projector_for(geom)(hu_to_mu(torch.from_numpy(hu[:2])[:, None]))
    out = ctresample.reconstruct(y, geom, method="fbp-unet", config={"weights": str(tmp_path / "export")})
    assert out.image.shape == (2, 1, 32, 32)
