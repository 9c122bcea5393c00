"""Tiny configs train for a few steps on CPU; the loss goes down; resume and export work."""
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from ctresample.models.prior import LatentDiffusionPrior, build_vae  # noqa: E402
from ctresample.training.autoencoder import train_autoencoder  # noqa: E402
from ctresample.training.data import Augment, SliceDataset  # noqa: E402
from ctresample.training.diffusion import train_diffusion  # noqa: E402

TINY_VAE = dict(block_out_channels=[8, 8, 8], layers_per_block=1, latent_channels=3, norm_num_groups=4,
                mid_block_add_attention=False)
TINY_UNET = dict(block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8,
                 down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"])


def phantoms(n=8, size=32, seed=0):
    """Ellipse 'bodies' (soft tissue with a bone rim and a lung hole) in air, HU."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    out = np.full((n, size, size), -1024.0, np.float32)
    for k in range(n):
        a, b = rng.uniform(0.6, 0.9), rng.uniform(0.5, 0.8)
        r = (xx / a) ** 2 + (yy / b) ** 2
        out[k][r < 1] = rng.uniform(20, 60)
        out[k][(r < 1) & (r > 0.8)] = 800
        out[k][((xx - 0.3) / 0.2) ** 2 + (yy / 0.3) ** 2 < 1] = -800
    return out


def _first_last(history, key="loss", k=5):
    vals = [h[key] for h in history if key in h]
    return float(np.mean(vals[:k])), float(np.mean(vals[-k:]))


def test_slice_dataset_range_and_air():
    hu = phantoms(2, 64)
    ds = SliceDataset(hu, crop=32, augment=Augment(max_rotation_deg=10))
    torch.manual_seed(0)
    x = torch.stack([ds[i] for i in range(4)])
    assert x.shape == (4, 1, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    full = SliceDataset(hu, crop=None, augment=Augment())[0]
    assert full.shape == (1, 64, 64)
    assert float(full[0, 0, 0]) == -1.0  # corners stay exactly air after rotation/zoom/jitter
    plain = SliceDataset(hu, crop=None, augment=None)[1]
    from ctresample.hu_window import hu_to_unit

    torch.testing.assert_close(plain[0], hu_to_unit(torch.from_numpy(hu[1])))


def test_autoencoder_trains_and_resumes(tmp_path):
    hu = phantoms(8, 32)
    common = dict(vae=TINY_VAE, image_size=32, crop=None, batch_size=4, lr=3e-3, warmup_steps=1,
                  lr_final_fraction=1.0, log_every=1, val_every=1000, val_slices=2, num_threads=1,
                  max_minutes=5, output_dir=str(tmp_path / "ae"), augment=Augment(max_rotation_deg=0, zoom=0))
    s = train_autoencoder(None, train_hu=hu, val_hu=hu[:2], progress=False, max_steps=40, **common)
    assert s["steps"] == 40
    state = torch.load(tmp_path / "ae" / "checkpoint.pt", weights_only=False)
    first, last = _first_last(state["history"], "l1")
    assert last < 0.7 * first, (first, last)
    assert (tmp_path / "ae" / "loss.png").stat().st_size > 0
    assert (tmp_path / "ae" / "vae" / "config.json").exists()
    s2 = train_autoencoder(None, train_hu=hu, val_hu=hu[:2], progress=False, resume=True, max_steps=45, **common)
    assert s2["steps"] == 45


def test_diffusion_trains_exports_prior(tmp_path):
    hu = phantoms(8, 32)
    torch.manual_seed(0)
    vae = build_vae(**TINY_VAE, sample_size=32)
    s = train_diffusion(None, train_hu=hu, vae=vae, progress=False, image_size=32, unet=TINY_UNET,
                        encode_copies=2, batch_size=8, lr=2e-3, warmup_steps=1, lr_final_fraction=1.0,
                        log_every=1, max_steps=40, max_minutes=5, num_threads=1, low_noise_fraction=0.5,
                        output_dir=str(tmp_path / "dm"))
    assert s["steps"] == 40 and s["latents"] == [16, 3, 8, 8]
    state = torch.load(tmp_path / "dm" / "checkpoint.pt", weights_only=False)
    first, last = _first_last(state["history"], "loss", k=8)
    assert last < first, (first, last)
    prior = LatentDiffusionPrior.from_pretrained(tmp_path / "dm" / "prior")
    assert prior.latent_shape == (3, 8, 8) and prior.image_size == 32
    assert abs(prior.latent_scale - s["latent_scale"]) < 1e-6
    # scaled training latents have unit variance
    z = prior.encode(torch.from_numpy(hu)[:, None])
    assert 0.5 < float(z.std()) < 2.0


def test_presets_load():
    from ctresample.config import load_config, preset_path
    from ctresample.training.autoencoder import AutoencoderTrainConfig
    from ctresample.training.diffusion import DiffusionTrainConfig

    a = load_config(AutoencoderTrainConfig, "train_autoencoder")
    d = load_config(DiffusionTrainConfig, preset_path("train_diffusion"))
    load_config(DiffusionTrainConfig, "train_diffusion_finetune")
    gpu = load_config(DiffusionTrainConfig, "train_diffusion_gpu")
    assert gpu.mixed_precision == "bf16" and gpu.init_from and gpu.batch_size > d.batch_size
    ft = load_config(AutoencoderTrainConfig, "train_decoder_finetune")
    assert ft.freeze_encoder and ft.init_vae and ft.balance_subjects > 0
    mse = load_config(AutoencoderTrainConfig, "train_decoder_mse")
    assert mse.freeze_encoder and mse.mse_weight > 0 and mse.l1_weight > 0
    assert isinstance(a.augment, Augment) and a.vae["latent_channels"] >= 3
    assert d.autoencoder.endswith("vae")
    with pytest.raises(ValueError, match="unknown"):
        load_config(AutoencoderTrainConfig, {"learning_rate": 1})


def test_decoder_only_finetune_keeps_encoder(tmp_path):
    hu = phantoms(4, 32)
    torch.manual_seed(0)
    vae = build_vae(**TINY_VAE, sample_size=32)
    vae.save_pretrained(tmp_path / "init")
    train_autoencoder(None, train_hu=hu, val_hu=hu[:2], progress=False, init_vae=str(tmp_path / "init"),
                      freeze_encoder=True, image_size=32, crop=None, batch_size=4, max_steps=5, val_every=1000,
                      num_threads=1, output_dir=str(tmp_path / "ft"))
    from diffusers import AutoencoderKL

    ft = AutoencoderKL.from_pretrained(tmp_path / "ft" / "vae")
    for (name, a), b in zip(vae.state_dict().items(), ft.state_dict().values(), strict=True):
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(a, b), name
    pairs = zip(vae.state_dict().items(), ft.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for (name, a), b in pairs
               if name.startswith("decoder."))


def test_autoencoder_squared_error_loss(tmp_path):
    hu = phantoms(8, 32)
    common = dict(vae=TINY_VAE, image_size=32, crop=None, batch_size=4, lr=3e-3, warmup_steps=1,
                  lr_final_fraction=1.0, log_every=1, val_every=1000, val_slices=2, num_threads=1, max_minutes=5,
                  augment=Augment(max_rotation_deg=0, zoom=0), kl_weight=0.0)
    torch.manual_seed(0)
    train_autoencoder(None, train_hu=hu, val_hu=hu[:2], progress=False, max_steps=30, l1_weight=0.0, mse_weight=1.0,
                      output_dir=str(tmp_path / "mse"), **common)
    history = torch.load(tmp_path / "mse" / "checkpoint.pt", weights_only=False)["history"]
    logged = [h for h in history if "mse" in h]
    # the optimised loss is the squared error alone, and it goes down
    assert all(abs(h["loss"] - h["mse"]) <= 1e-6 * max(1.0, h["mse"]) for h in logged)
    first, last = _first_last(history, "mse")
    assert last < 0.5 * first, (first, last)
    for bad in ({"l1_weight": 0.0, "mse_weight": 0.0}, {"mse_weight": -1.0}):
        with pytest.raises(ValueError, match="mse_weight"):
            train_autoencoder(None, train_hu=hu, val_hu=hu[:2], progress=False, max_steps=1,
                              output_dir=str(tmp_path / "bad"), **{**common, **bad})


def test_sample_timesteps_mixture():
    from ctresample.training.diffusion import sample_timesteps

    g = torch.Generator().manual_seed(0)
    uniform = sample_timesteps(20000, 1000, generator=g)
    assert uniform.min() >= 0 and uniform.max() < 1000
    assert abs((uniform < 250).float().mean().item() - 0.25) < 0.015
    t = sample_timesteps(20000, 1000, 0.5, 250, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() < 1000 and t.dtype == torch.long
    # half the batch from [0, 250), the other half uniform: P(t < 250) = 0.5 + 0.5 * 0.25
    assert abs((t < 250).float().mean().item() - 0.625) < 0.015
    assert (t >= 900).any()  # high noise levels are still trained
    # reproducible from the generator; fraction 0 draws exactly the uniform timesteps
    assert torch.equal(t, sample_timesteps(20000, 1000, 0.5, 250, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(uniform, sample_timesteps(20000, 1000, 0.0, 250, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="low_noise_fraction"):
        sample_timesteps(4, 1000, 1.5)
    with pytest.raises(ValueError, match="low_noise_max_t"):
        sample_timesteps(4, 1000, 0.5, 0)


def test_slice_loader_balances_subjects():
    from ctresample.training.data import slice_loader

    # subject 0 has 9 slices, subject 1 one; the dataset repeats the 10 slices 4 times
    subject = np.array([0] * 9 + [1])

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return torch.tensor(i % 10)

    torch.manual_seed(0)
    drawn = torch.cat([b for _ in range(50) for b in slice_loader(Items(), 8, subject, balance=1.0)])
    share = float((drawn == 9).float().mean())
    assert 0.42 < share < 0.58, share          # balance 1: each subject half the draws
    plain = torch.cat([b for _ in range(50) for b in slice_loader(Items(), 8)])
    assert 0.06 < float((plain == 9).float().mean()) < 0.14   # unbalanced: 1 slice in 10
    with pytest.raises(ValueError, match="subject index"):
        slice_loader(Items(), 8, None, balance=0.5)


def test_autoencoder_balance_needs_matching_subjects(tmp_path):
    hu = phantoms(4, 32)
    with pytest.raises(ValueError, match="train_subject has 3 entries for 4"):
        train_autoencoder(None, train_hu=hu, val_hu=hu[:2], train_subject=np.array([0, 0, 1]), progress=False,
                          vae=TINY_VAE, image_size=32, crop=None, batch_size=4, max_steps=2, balance_subjects=0.5,
                          num_threads=1, output_dir=str(tmp_path / "ae"))
    s = train_autoencoder(None, train_hu=hu, val_hu=hu[:2], train_subject=np.array([0, 0, 0, 1]), progress=False,
                          vae=TINY_VAE, image_size=32, crop=None, batch_size=4, max_steps=3, balance_subjects=0.5,
                          val_every=1000, num_threads=1, output_dir=str(tmp_path / "ae2"))
    assert s["steps"] == 3
