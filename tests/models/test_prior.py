import time

import pytest
import torch

pytest.importorskip("diffusers")

from ctresample.models.prior import DEFAULT_PRETRAINED, LatentDiffusionPrior  # noqa: E402


@pytest.fixture(scope="module")
def prior():
    return LatentDiffusionPrior.tiny(seed=0, image_size=32)


def _hu(b=2, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return -1024 + 1500 * torch.rand((b, 1, s, s), generator=g)


def test_tiny_builds_fast_and_is_deterministic():
    LatentDiffusionPrior.tiny()  # warm the import
    t0 = time.time()
    a = LatentDiffusionPrior.tiny(seed=3)
    assert time.time() - t0 < 1.0
    b = LatentDiffusionPrior.tiny(seed=3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_shapes(prior):
    c, h, w = prior.latent_shape
    assert (h, w) == (32 // prior.downsample_factor,) * 2 == (8, 8)
    hu = _hu()
    z = prior.encode(hu)
    assert z.shape == (2, c, h, w)
    x = prior.decode(z)
    assert x.shape == hu.shape and x.dtype == torch.float32
    assert prior.predict_eps(z, 10).shape == z.shape
    assert prior.tweedie_z0(z, torch.tensor([0, 999])).shape == z.shape
    assert prior.alphas_cumprod.shape == (1000,) and prior.alphas_cumprod.dtype == torch.float32
    assert prior.alphas_cumprod.device == prior.device
    with pytest.raises(ValueError):
        prior.encode(hu[:, 0])
    with pytest.raises(ValueError):
        prior.predict_eps(z, torch.tensor([1, 2, 3]))


def test_encode_is_deterministic(prior):
    hu = _hu()
    torch.testing.assert_close(prior.encode(hu), prior.encode(hu), rtol=0, atol=0)


def test_int_and_tensor_timesteps_agree(prior):
    z = torch.randn(2, *prior.latent_shape)
    torch.testing.assert_close(prior.predict_eps(z, 500), prior.predict_eps(z, torch.tensor([500, 500])))


def test_tweedie_formula(prior):
    z = torch.randn(3, *prior.latent_shape)
    eps = torch.randn_like(z)
    t = torch.tensor([0, 400, 999])
    abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = (z - (1 - abar).sqrt() * eps) / abar.sqrt()
    torch.testing.assert_close(prior.tweedie_z0(z, t, eps), expected)
    # consistent with forward noising: z_t from z0 with known eps gives z0 back
    z0 = torch.randn_like(z)
    zt = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
    torch.testing.assert_close(prior.tweedie_z0(zt, t, eps), z0, atol=1e-4, rtol=1e-4)


def test_decode_is_differentiable(prior):
    z = torch.randn(1, *prior.latent_shape, requires_grad=True)
    prior.decode(z).pow(2).mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_save_load_round_trip(prior, tmp_path):
    prior.latent_scale = 0.75
    prior.save_pretrained(tmp_path / "p")
    for sub in ("vae", "unet", "scheduler", "prior_config.json"):
        assert (tmp_path / "p" / sub).exists()
    q = LatentDiffusionPrior.from_pretrained(tmp_path / "p")
    assert q.latent_scale == 0.75 and q.image_size == 32 and q.latent_shape == prior.latent_shape
    hu = _hu()
    z = prior.encode(hu)
    torch.testing.assert_close(q.encode(hu), z, rtol=0, atol=0)
    torch.testing.assert_close(q.decode(z), prior.decode(z), rtol=0, atol=0)
    torch.testing.assert_close(q.predict_eps(z, 7), prior.predict_eps(z, 7), rtol=0, atol=0)
    torch.testing.assert_close(q.alphas_cumprod, prior.alphas_cumprod)
    prior.latent_scale = 1.0


def test_fp16_save_is_smaller_and_close(prior, tmp_path):
    prior.save_pretrained(tmp_path / "a")
    prior.save_pretrained(tmp_path / "h", fp16=True)
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*.safetensors"))  # noqa: E731
    assert size(tmp_path / "h") < 0.6 * size(tmp_path / "a")
    q = LatentDiffusionPrior.from_pretrained(tmp_path / "h")  # loads as float32
    assert q.dtype == torch.float32
    z = prior.encode(_hu())
    torch.testing.assert_close(q.decode(z), prior.decode(z), atol=30.0, rtol=0)  # HU (random weights; fp16 rounding)


def test_missing_path_error_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        LatentDiffusionPrior.from_pretrained(tmp_path / "nowhere")


def test_default_path_is_package_data():
    assert DEFAULT_PRETRAINED.parts[-3:] == ("ctresample", "pretrained", "ldm-ct-256")


def test_channels_last_is_opt_in_and_close():
    """``use_channels_last``: same shapes, values to rounding; the default layout is restored by ``False``."""
    p = LatentDiffusionPrior.tiny(seed=3)
    g = torch.Generator().manual_seed(0)
    hu = torch.rand((2, 1, 32, 32), generator=g) * 2000 - 1000
    z = torch.randn((2, *p.latent_shape), generator=g)
    with torch.no_grad():
        ref = (p.encode(hu), p.decode(z), p.predict_eps(z, 300))
        assert p.memory_format == torch.contiguous_format
        p.use_channels_last()
        fast = (p.encode(hu), p.decode(z), p.predict_eps(z, 300))
        assert p.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        p.use_channels_last(False)
        again = (p.encode(hu), p.decode(z), p.predict_eps(z, 300))
    for a, b, c in zip(ref, fast, again, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3 * float(a.abs().max()))
        assert torch.equal(c, a)


def test_load_prior_caches_each_layout_apart(tmp_path):
    from ctresample.models.prior import load_prior

    LatentDiffusionPrior.tiny(seed=4).save_pretrained(tmp_path / "tiny")
    plain = load_prior(tmp_path / "tiny")
    fast = load_prior(tmp_path / "tiny", channels_last=True)
    assert fast is not plain and fast is load_prior(tmp_path / "tiny", channels_last=True)
    assert plain is load_prior(tmp_path / "tiny")
    assert plain.memory_format == torch.contiguous_format and fast.memory_format == torch.channels_last
    assert plain.vae.decoder.conv_in.weight.is_contiguous()  # asking for the fast one left this one alone


def test_resample_preset_asks_for_channels_last():
    from ctresample.config import load_config
    from ctresample.methods.resample import ResampleConfig

    assert load_config(ResampleConfig, "resample").channels_last is True
    assert load_config(ResampleConfig, {"channels_last": False}).channels_last is False
