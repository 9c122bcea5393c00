"""One contract for every registered reconstruction method, parametrised from the registry.

Shapes, units (HU out), the info record, determinism with a generator (and variety across
seeds for the stochastic ones), posterior samples, and refusal of bad input. A method added
to the registry is tested here without touching this file; a method with learned weights
needs an entry in ``FAST`` (a tiny random network), which a test below enforces.
"""
import pytest
import torch

import ctresample
from ctresample.methods import BUILTIN, available_methods, method_spec
from operators import ParallelBeamGeometry, hu_to_mu, projector_for

GEOM = ParallelBeamGeometry(image_size=32, n_views=10)


def _tiny_prior():
    from ctresample.models.prior import LatentDiffusionPrior

    return LatentDiffusionPrior.tiny(seed=0, image_size=32).requires_grad_(False)


def _tiny_fbp_unet():
    from ctresample.models.fbp_unet import FBPConvNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = FBPConvNet(channels=(8, 16), norm_groups=4)
        torch.nn.init.normal_(net.head.weight, std=0.01)
    return net.eval()


#: small settings per method so the suite runs in seconds; learned methods get tiny random networks
FAST = {
    "sirt": lambda: dict(config={"n_iterations": 20}),
    "cgls": lambda: dict(config={"n_iterations": 10}),
    "fbp-unet": lambda: dict(net=_tiny_fbp_unet()),
    "latent-dps": lambda: dict(config=dict(num_inference_steps=3, n_samples=1), prior=_tiny_prior()),
    "resample": lambda: dict(config=dict(num_inference_steps=4, skip_interval=2, start_fraction=0.25, cg_max_iter=3,
                                         warm_start="sirt", warm_start_fraction=0.25, warm_start_iterations=3,
                                         sirt_iterations=5, n_samples=1),
                             prior=_tiny_prior()),
}


def fast_kwargs(name: str) -> dict:
    return FAST[name]() if name in FAST else {}


@pytest.fixture(scope="module")
def problem():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    hu = torch.full((2, 1, 32, 32), -1000.0)
    hu[:, :, (xx**2 + yy**2) < 0.6] = 50.0
    hu[1, :, (xx**2 + (yy - 0.3) ** 2) < 0.05] = 700.0
    return hu, projector_for(GEOM)(hu_to_mu(hu))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_builtins_are_registered_and_resolvable():
    assert [s.name for s in BUILTIN] == ["fbp", "sirt", "cgls", "tv", "fbp-unet", "latent-dps", "resample"]
    for name in available_methods():
        spec = method_spec(name)
        assert callable(spec.load())
        if spec.config is not None:
            assert spec.load_config(None) == spec.config_class()()


def test_fast_settings_cover_learned_methods():
    learned = [n for n in available_methods() if method_spec(n).weights is not None]
    assert set(learned) <= set(FAST), f"add tiny settings for {sorted(set(learned) - set(FAST))} to FAST"


@pytest.mark.parametrize("name", available_methods())
def test_shape_units_info_and_determinism(name, problem):
    hu, y = problem
    kw = fast_kwargs(name)
    a = ctresample.reconstruct(y, GEOM, method=name, generator=_gen(0), **kw)
    b = ctresample.reconstruct(y, GEOM, method=name, generator=_gen(0), **kw)
    assert a.image.shape == (2, 1, 32, 32) and a.image.dtype == torch.float32
    assert torch.isfinite(a.image).all()
    # HU, not attenuation (water is 0.0192 /mm): a spread of hundreds of HU, inside what CT can hold
    assert a.image.std() > 50 and a.image.min() > -2100 and a.image.max() < 4100
    assert torch.equal(a.image, b.image), "the same generator seed must give the same image"
    for key in ("nfe", "inner_iterations", "data_residual", "wall_time", "method"):
        assert key in a.info, key
    assert len(a.info["data_residual"]) == 2 and a.info["method"] == name
    c = ctresample.reconstruct(y, GEOM, method=name, generator=_gen(1), **kw)
    if method_spec(name).stochastic:
        assert not torch.equal(a.image, c.image), "a stochastic method must depend on the generator"
    else:
        assert torch.equal(a.image, c.image), "a deterministic method must not depend on the generator"
    # 2D and 3D inputs give the batch form
    single = ctresample.reconstruct(y[0, 0], GEOM, method=name, generator=_gen(0), **kw)
    assert single.image.shape == (1, 1, 32, 32)
    assert ctresample.reconstruct(y[:, 0], GEOM, method=name, generator=_gen(0), **kw).image.shape == (2, 1, 32, 32)


@pytest.mark.parametrize("name", available_methods())
def test_posterior_samples(name, problem):
    hu, y = problem
    kw = fast_kwargs(name)
    if method_spec(name).stochastic:
        out = ctresample.reconstruct(y, GEOM, method=name, generator=_gen(0), n_samples=2, **kw)
        assert out.image.shape == out.std.shape == (2, 1, 32, 32)
        assert (out.std >= 0).all() and out.std.sum() > 0
        return
    try:
        out = ctresample.reconstruct(y, GEOM, method=name, n_samples=3, **kw)
    except (TypeError, ValueError) as exc:  # refused, and the message says why
        assert "n_samples" in str(exc)
    else:
        assert out.image.shape == (2, 1, 32, 32) and out.std is None


@pytest.mark.parametrize("name", available_methods())
def test_bad_input_is_refused(name, problem):
    hu, y = problem
    kw = fast_kwargs(name)
    with pytest.raises(ValueError, match="contradicts the geometry"):
        ctresample.reconstruct(y[..., :-1], GEOM, method=name, **kw)
    with pytest.raises(ValueError, match="sinogram must be"):
        ctresample.reconstruct(y[None], GEOM, method=name, **kw)
    bad = y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ctresample.reconstruct(bad, GEOM, method=name, **kw)
    if method_spec(name).config is not None:
        with pytest.raises(ValueError, match="unknown"):
            ctresample.reconstruct(y, GEOM, method=name, not_an_option=1, **kw)


def test_unknown_method_names_the_registered_ones(problem):
    with pytest.raises(ValueError, match="available: cgls, fbp"):
        ctresample.reconstruct(problem[1], GEOM, method="no-such-method")
