"""ReSample (Algorithm 1) and Latent-DPS on a tiny random prior (seconds on CPU)."""

import pytest
import torch

import ctresample
from ctresample.config import load_config
from ctresample.methods.resample import ResampleConfig, _Consistency, consistency_plan, nfe_per_sample, resample
from operators import projector_for

# the paper's structure (noise start, no final solve), tiny sizes
FAST = dict(num_inference_steps=6, skip_interval=2, start_fraction=0.3, cg_max_iter=5, noise_sigma=None,
            warm_start="none", final_consistency="none", cg_lambda=0.01, n_samples=1, frames=("identity",),
            network_dtype="float32",  # the same on every CPU (the default, auto, follows the hardware)
            frame_polish_iterations=0)  # the polish of the frames' average is tested on its own


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shapes_info_and_determinism(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    a = ctresample.reconstruct(y, geom, method="resample", config=FAST, generator=_gen(0), prior=tiny_prior)
    b = ctresample.reconstruct(y, geom, method="resample", config=FAST, generator=_gen(0), prior=tiny_prior)
    c = ctresample.reconstruct(y, geom, method="resample", config=FAST, generator=_gen(1), prior=tiny_prior)
    assert a.image.shape == (2, 1, 32, 32) and a.image.dtype == torch.float32
    assert torch.equal(a.image, b.image)
    assert not torch.equal(a.image, c.image)
    assert a.std is None
    info = a.info
    assert info["nfe"] == 6
    assert info["consistency_steps"] == [3, 5]
    assert len(info["inner_iterations"]) == 2 and all(i > 0 for i in info["inner_iterations"])
    assert len(info["data_residual"]) == 2 and info["wall_time"] > 0
    assert a.image.min() >= -1024 and a.image.max() <= 3071


def test_ddim_loop_matches_diffusers_scheduler(tiny_prior):
    """With C empty the loop is plain DDIM: compare with DDIMScheduler.step (eta = 0 and 0.7)."""
    from diffusers import DDIMScheduler

    for eta in (0.0, 0.7):
        cfg = ResampleConfig(num_inference_steps=5, eta=eta, start_fraction=1.0, end_fraction=1.0,
                             warm_start="none", final_consistency="none")
        zs = []
        _, info = _run_latent(tiny_prior, cfg, _gen(3), zs)
        assert info["consistency_steps"] == []
        sched = DDIMScheduler.from_config(tiny_prior.scheduler.config)
        sched.set_timesteps(5)
        g = _gen(3)
        z = torch.randn((2, *tiny_prior.latent_shape), generator=g)
        for t in sched.timesteps:
            with torch.no_grad():
                eps = tiny_prior.predict_eps(z, t)
            z = sched.step(eps, t, z, eta=eta, generator=g if eta > 0 else None).prev_sample
        torch.testing.assert_close(zs[-1], z, rtol=1e-4, atol=1e-5)


def _run_latent(prior, cfg, generator, out):
    """Run resample() and capture the final latent by intercepting the decoder."""
    orig = prior.decode

    def spy(z):
        out.append(z.detach().clone())
        return orig(z)

    prior.decode = spy
    try:
        geom = ctresample.ParallelBeamGeometry(image_size=32, n_views=10)
        A = projector_for(geom)
        y = torch.zeros(2, 1, *geom.sinogram_shape)
        return resample(prior, A, y, cfg, generator)
    finally:
        del prior.decode


def test_consistency_plan_authors_schedule():
    cfg = load_config(ResampleConfig, "resample_paper")
    plan = consistency_plan(cfg)
    steps = sorted(plan)
    assert cfg.num_inference_steps == 500
    assert steps[0] == 169 and steps[-1] == 499 and all(b - a == 10 for a, b in zip(steps, steps[1:], strict=False))
    assert {plan[i] for i in steps if i < 333} == {"pixel"}
    assert {plan[i] for i in steps if i >= 334} == {"latent"}


def test_default_config_matches_preset():
    assert load_config(ResampleConfig, "resample") == ResampleConfig()
    cfg = ResampleConfig()
    assert nfe_per_sample(cfg) * cfg.n_samples <= 100  # the NFE budget of the default


def test_nfe_follows_warm_start(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    for steps, frac, expected in ((8, 0.5, 4), (8, 0.875, 1), (2, 0.875, 1)):  # at least one step remains
        cfg = dict(FAST, num_inference_steps=steps, warm_start="sirt", warm_start_fraction=frac,
                   warm_start_iterations=2)
        assert nfe_per_sample(ResampleConfig(**cfg)) == expected
        out = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(0), prior=tiny_prior)
        assert out.info["nfe"] == expected and torch.isfinite(out.image).all()


def test_pixel_cg_and_latent_optimisation_reduce_residual(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    A = projector_for(geom)
    cfg = ResampleConfig(cg_max_iter=8, latent_max_iter=30, latent_lr=0.05, noise_sigma=None, cg_lambda=0.01)
    dc = _Consistency(tiny_prior, A, y, cfg)
    z0 = torch.randn((2, *tiny_prior.latent_shape), generator=_gen(0))

    def res(hu_img):
        return (y - A(ctresample.hu_to_mu(hu_img))).flatten(1).norm(dim=1)

    with torch.no_grad():
        x_hat = tiny_prior.decode(z0)
    x_y = dc.pixel_cg(x_hat)
    assert (res(x_y) < 0.5 * res(x_hat)).all()
    x_s = dc.pixel_sirt(x_hat)
    assert (res(x_s) < 0.5 * res(x_hat)).all()
    assert (x_s >= -1024 - 1e-3).all()  # kept above the window's floor
    z_y = dc.latent(z0)
    with torch.no_grad():
        assert (res(tiny_prior.decode(z_y)) < res(x_hat)).all()
    assert (dc.inner > 0).all()


def test_final_pixel_consistency_lowers_data_residual(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    kw = dict(config=FAST, generator=_gen(0), prior=tiny_prior)
    plain = ctresample.reconstruct(y, geom, method="resample", **kw)
    polished = ctresample.reconstruct(y, geom, method="resample", final_consistency="pixel", **kw)
    assert all(p < q for p, q in zip(polished.info["data_residual"], plain.info["data_residual"], strict=True))


def test_final_tv_anchor_pulls_towards_the_prior_image(tiny_prior, tiny_problem):
    """The final TV solve's quadratic pull: a huge weight keeps D(z_0), none lets the data move it."""
    geom, hu, y = tiny_problem
    cfg = dict(FAST, pixel_solver="tv", tv_iterations=5, tv_final_iterations=60, clip_output=False,
               anchor_weight=0.0, anchor_weight_per_sigma=0.0, final_anchor_weight=0.0,
               final_anchor_weight_per_sigma=0.0, anchor_flat_weight=0.0, final_anchor_flat_weight=0.0)
    def run(**over):
        return ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, **over), generator=_gen(0),
                                      prior=tiny_prior)

    raw = run().image
    free = run(final_consistency="pixel")
    held = run(final_consistency="pixel", final_anchor_weight=1e4)
    floor = -1024.0
    assert (held.image - raw.clamp_min(floor)).abs().max() < 1.0  # HU
    assert (free.image - raw.clamp_min(floor)).abs().max() > 10.0
    assert all(f < h for f, h in zip(free.info["data_residual"], held.info["data_residual"], strict=True))
    # the pull in every consistency step changes the chain; a bad value is refused
    every = run(anchor_weight=1.0)
    assert not torch.allclose(every.image, raw)
    with pytest.raises(ValueError, match="anchor_weight"):
        ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, anchor_weight=-1.0), prior=tiny_prior)
    # the pull where D(z_0) is flat: with a huge scale every pixel counts as flat (held as above); with a tiny
    # one only the flat pixels are held, and the image's edges are free to move
    flat_held = run(final_consistency="pixel", final_anchor_flat_weight=1e4, anchor_flat_hu=1e6)
    assert (flat_held.image - raw.clamp_min(floor)).abs().max() < 1.0
    edges_free = run(final_consistency="pixel", final_anchor_flat_weight=1e4, anchor_flat_hu=1e-3)
    assert (edges_free.image - raw.clamp_min(floor)).abs().max() > 10.0
    assert not torch.allclose(run(anchor_flat_weight=1.0).image, raw)  # in every step: another chain
    for bad in (dict(anchor_flat_weight=-1.0), dict(final_anchor_flat_weight=-0.1), dict(anchor_flat_hu=0.0)):
        with pytest.raises(ValueError, match="anchor_flat"):
            ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, **bad), prior=tiny_prior)


def test_tv_edge_weight_lowers_the_tv_term_at_the_prior_images_edges(tiny_prior, tiny_problem):
    """A weight of 0 with a huge scale (every pixel flat) is still plain TV; with a tiny scale (every pixel an
    edge, but the border's, where the gradient is taken as 0) the solve is close to one without TV, and a weight
    of 0.5 lands between the two; bad values are refused."""
    geom, hu, y = tiny_problem
    cfg = dict(FAST, pixel_solver="tv", tv_iterations=5, tv_final_iterations=60, clip_output=False,
               final_consistency="pixel", tv_final_lambda=5e-3, tv_lambda_per_sigma=0.0, anchor_flat_weight=0.0,
               final_anchor_flat_weight=0.0, tv_edge_weight=1.0, final_tv_edge_weight=1.0)

    def run(**over):
        return ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, **over), generator=_gen(0),
                                      prior=tiny_prior).image

    plain, no_tv = run(), run(tv_final_lambda=0.0)
    assert (run(final_tv_edge_weight=0.0, tv_edge_hu=1e9) - plain).abs().max() < 1e-3  # HU: weight 1 - 1e-18
    all_edge = run(final_tv_edge_weight=0.0, tv_edge_hu=1e-6)
    assert (all_edge - no_tv).norm() < 0.3 * (plain - no_tv).norm()
    half = run(final_tv_edge_weight=0.5, tv_edge_hu=1e-6)  # half the TV weight: between the two
    assert (all_edge - no_tv).norm() < (half - no_tv).norm() < (plain - no_tv).norm()
    assert not torch.allclose(run(tv_edge_weight=0.2, tv_edge_hu=1e-6), plain)  # in every step: another chain
    for bad in (dict(tv_edge_weight=-0.1), dict(final_tv_edge_weight=1.5), dict(tv_edge_hu=0.0)):
        with pytest.raises(ValueError, match="tv_edge"):
            ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, **bad), prior=tiny_prior)


def test_sirt_solver_runs_in_the_loop(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    cfg = dict(FAST, pixel_solver="sirt", sirt_iterations=4, final_consistency="pixel")
    out = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(0), prior=tiny_prior)
    assert out.info["inner_iterations"] == [4 * 3, 4 * 3]  # two steps in C + the final solve
    assert torch.isfinite(out.image).all()
    with pytest.raises(ValueError, match="pixel_solver"):
        ctresample.reconstruct(y, geom, method="resample", config=dict(FAST, pixel_solver="lsqr"), prior=tiny_prior)


def test_authors_variants_run(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    cfg = dict(FAST, pixel_solver="adamw", pixel_max_iter=10, latent_fraction=0.6, latent_max_iter=5,
               final_consistency="latent", eta=0.5)
    out = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(0), prior=tiny_prior)
    assert out.info["consistency_phases"] == ["pixel", "latent"]
    assert torch.isfinite(out.image).all()


def test_n_samples_mean_and_std(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    out = ctresample.reconstruct(y, geom, method="resample", config=dict(FAST, num_inference_steps=3),
                                 generator=_gen(0), prior=tiny_prior, n_samples=3)
    assert out.image.shape == (2, 1, 32, 32) and out.std.shape == (2, 1, 32, 32)
    samples = out.info["samples"]
    assert samples.shape == (2, 3, 1, 32, 32)
    torch.testing.assert_close(out.image, samples.mean(dim=1))
    assert (out.std > 0).any()
    assert out.info["nfe"] == 9 and out.info["nfe_per_sample"] == 3


def test_geometry_mismatch_is_explained(tiny_prior):
    geom = ctresample.ParallelBeamGeometry(image_size=48, n_views=10)
    y = torch.zeros(1, 1, *geom.sinogram_shape)
    with pytest.raises(ValueError, match="32x32"):
        ctresample.reconstruct(y, geom, method="resample", config=FAST, prior=tiny_prior)


def test_unknown_option_rejected(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    with pytest.raises(ValueError, match="unknown"):
        ctresample.reconstruct(y, geom, method="resample", config=dict(FAST, step=3), prior=tiny_prior)


def test_latent_dps_shapes_determinism_and_zeta_zero_is_ddim(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    cfg = dict(num_inference_steps=4, zeta=0.5)
    a = ctresample.reconstruct(y, geom, method="latent-dps", config=cfg, generator=_gen(0), prior=tiny_prior)
    b = ctresample.reconstruct(y, geom, method="latent-dps", config=cfg, generator=_gen(0), prior=tiny_prior)
    assert a.image.shape == (2, 1, 32, 32)
    assert torch.equal(a.image, b.image)
    assert a.info["nfe"] == 4
    # zeta = 0 is unconditional DDIM, the same as ReSample with no consistency step
    d = ctresample.reconstruct(y, geom, method="latent-dps", config=dict(cfg, zeta=0.0), generator=_gen(0),
                               prior=tiny_prior)
    r = ctresample.reconstruct(y, geom, method="resample", generator=_gen(0), prior=tiny_prior,
                               config=dict(num_inference_steps=4, start_fraction=1.0, warm_start="none",
                                           final_consistency="none", n_samples=1, frames=("identity",),
                                           network_dtype="float32"))
    torch.testing.assert_close(d.image, r.image)
    assert not torch.equal(a.image, d.image)


@pytest.mark.parametrize("views", [25, 10])
def test_default_config_runs(tiny_prior, views):
    from operators import ParallelBeamGeometry

    geom = ParallelBeamGeometry(image_size=32, n_views=views)
    y = projector_for(geom)(0.02 * torch.rand(2, 1, 32, 32, generator=_gen(9)))
    out = ctresample.reconstruct(y, geom, method="resample", generator=_gen(0), prior=tiny_prior)
    # 400 DDIM steps entered at t = 22, 200 from t = 120 below 16 views: 12 or 25 steps per chain after the warm start
    steps = 12 if views >= 16 else 25
    assert out.info["num_inference_steps"] == (400 if views >= 16 else 200)
    assert out.info["warm_start_fraction"] == (0.96875 if views >= 16 else 0.875)
    # one sample (TV consistency: samples agree), its chain run in four frames (slice, mirror, shift, both)
    assert out.info["nfe_per_sample"] == 4 * steps and len(out.info["consistency_steps"]) == steps
    assert out.info["n_samples"] == 1 and out.info["nfe"] == 4 * steps
    assert out.info["frames"] == ["identity", "mirror", "shift", "mirror+shift"]
    assert out.std is None
    # TV consistency: 80 iterations at each step but the last (warm duals); the last step's solve (100) is the
    # output; and the average of a slice with little noise in its residual is polished by 100 more
    assert len(out.info["frame_polished"]) == y.shape[0]
    assert out.info["inner_iterations"] == [4 * ((steps - 1) * 80 + 100) + 100 * p for p in out.info["frame_polished"]]
    # the steps but the last + the warm start's encoding, per frame (one warm-start solve, shared: not a decode)
    assert out.info["decoder_calls"] == 4 * steps and out.info["encoder_calls"] == 4 * steps


def test_warm_start_skips_steps(tiny_prior, tiny_problem):
    geom, hu, y = tiny_problem
    cfg = dict(FAST, num_inference_steps=8, warm_start="sirt", warm_start_fraction=0.5, warm_start_iterations=5)
    out = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(0), prior=tiny_prior)
    assert out.info["nfe"] == 4
    assert min(out.info["consistency_steps"]) >= 4
    assert torch.isfinite(out.image).all()


def test_tv_solver_and_tv_warm_start_in_the_loop(tiny_prior, tiny_problem):
    """Beyond the paper: TV least squares as the pixel solver (fixed iterations) and a TV warm start."""
    geom, hu, y = tiny_problem
    cfg = dict(FAST, pixel_solver="tv", tv_iterations=5, tv_final_iterations=7, final_consistency="pixel",
               warm_start="tv", warm_start_tv_iterations=20, warm_start_fraction=0.5)
    a = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(0), prior=tiny_prior)
    b = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(0), prior=tiny_prior)
    assert torch.equal(a.image, b.image)
    n_steps = len(a.info["consistency_steps"])
    assert a.info["inner_iterations"] == [5 * n_steps + 7] * 2
    assert a.info["nfe"] == 3  # 6 steps entered at 1/2
    # the TV final solve lowers the data residual of the decoded sample
    plain = ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, final_consistency="none"),
                                   generator=_gen(0), prior=tiny_prior)
    assert all(p < q for p, q in zip(a.info["data_residual"], plain.info["data_residual"], strict=True))
    with pytest.raises(ValueError, match="tv_lambda"):
        ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, tv_lambda=-1.0), prior=tiny_prior)


def test_tv_warm_dual_carries_each_solves_duals_to_the_next(tiny_prior, tiny_problem, monkeypatch):
    """tv_warm_dual: every TV solve after the first starts from the duals the previous one ended with."""
    import ctresample.methods.resample as rs

    geom, hu, y = tiny_problem
    cfg = dict(FAST, pixel_solver="tv", tv_iterations=4, tv_final_iterations=6, final_consistency="pixel")
    calls = []
    original = rs.tv_least_squares

    def recording(*args, **kwargs):
        res = original(*args, **kwargs)
        calls.append((kwargs.get("dual0"), res.dual))
        return res

    monkeypatch.setattr(rs, "tv_least_squares", recording)
    warm = ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, tv_warm_dual=True),
                                  generator=_gen(0), prior=tiny_prior)
    n_solves = len(warm.info["consistency_steps"]) + 1
    assert len(calls) == n_solves >= 3
    assert calls[0][0] is None
    assert all(calls[k][0] is calls[k - 1][1] for k in range(1, n_solves))
    calls.clear()
    cold = ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, tv_warm_dual=False),
                                  generator=_gen(0), prior=tiny_prior)
    assert all(dual0 is None for dual0, _ in calls)
    assert not torch.equal(warm.image, cold.image)
    again = ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, tv_warm_dual=True),
                                   generator=_gen(0), prior=tiny_prior)
    assert torch.equal(warm.image, again.image)


def test_final_consistency_last_outputs_the_last_steps_image(tiny_prior, tiny_problem, monkeypatch):
    """final_consistency 'last': the last DDIM step's consistency image is the output, with no
    re-encoding, final decode or final solve."""
    geom, hu, y = tiny_problem
    cfg = dict(FAST, pixel_solver="tv", tv_iterations=4, tv_final_iterations=6, final_consistency="last")
    solves = []
    original = _Consistency.pixel_solve

    def recording(self, x_hat, final=False):
        out = original(self, x_hat, final)
        solves.append((final, out.clone()))
        return out

    monkeypatch.setattr(_Consistency, "pixel_solve", recording)
    steps = []
    out = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(0), prior=tiny_prior,
                                 callback=lambda i, t, z0: steps.append(i))
    n = len(out.info["consistency_steps"])
    assert out.info["consistency_steps"][-1] == FAST["num_inference_steps"] - 1 == steps[-1]
    # no solve after the loop: the last step's is made with the final solve's settings
    assert len(solves) == n and [final for final, _ in solves] == [False] * (n - 1) + [True]
    assert out.info["decoder_calls"] == n and out.info["encoder_calls"] == n - 1
    assert out.info["inner_iterations"] == [4 * (n - 1) + 6] * 2
    assert torch.equal(out.image, solves[-1][1].clamp(-1024, 3071))
    pixel = ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, final_consistency="pixel"),
                                   generator=_gen(0), prior=tiny_prior)
    assert pixel.info["decoder_calls"] == n + 1 and pixel.info["inner_iterations"] == [4 * n + 6] * 2
    with pytest.raises(ValueError, match="end_fraction"):
        ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, end_fraction=0.6), prior=tiny_prior)


def test_tv_warm_start_hands_its_duals_to_the_first_step(tiny_prior, tiny_problem, monkeypatch):
    """With a TV warm start and tv_warm_dual, the first consistency solve starts from the warm start's duals."""
    import ctresample.methods.resample as rs

    geom, hu, y = tiny_problem
    cfg = dict(FAST, pixel_solver="tv", tv_iterations=4, final_consistency="last", warm_start="tv",
               warm_start_tv_iterations=10, warm_start_fraction=0.5)
    calls = []
    original = rs.tv_least_squares

    def recording(*args, **kwargs):
        res = original(*args, **kwargs)
        calls.append((kwargs.get("dual0"), res.dual, kwargs.get("n_iterations")))
        return res

    monkeypatch.setattr(rs, "tv_least_squares", recording)
    ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(0), prior=tiny_prior)
    assert calls[0][2] == 10 and calls[0][0] is None  # the warm start, from zero duals
    assert all(calls[k][0] is calls[k - 1][1] for k in range(1, len(calls)))
    calls.clear()
    ctresample.reconstruct(y, geom, method="resample", config=dict(cfg, tv_warm_dual=False), generator=_gen(0),
                           prior=tiny_prior)
    assert all(dual0 is None for dual0, _, _ in calls)


def test_mirrored_operator(tiny_problem):
    """``A M`` mirrors the image before projecting; its adjoint is exact and its norm is ``A``'s."""
    from ctresample.methods.resample import Frame, Framed
    from ctresample.solvers.cg import operator_norm_sq

    geom, hu, y = tiny_problem
    A = projector_for(geom)
    Am = Framed(A, Frame("mirror"))
    g = _gen(0)
    x = torch.rand(2, 1, 32, 32, generator=g)
    r = torch.rand(2, 1, *geom.sinogram_shape, generator=g)
    torch.testing.assert_close(Am(x), A(x.flip(-1)))
    assert not torch.allclose(Am(x), A(x))
    lhs, rhs = (Am(x) * r).sum(), (x * Am.adjoint(r)).sum()
    assert abs(float(lhs - rhs)) <= 1e-5 * abs(float(lhs))
    assert Am.geometry == geom and Am.domain_shape == A.domain_shape and Am.range_shape == A.range_shape
    assert operator_norm_sq(Am) == operator_norm_sq(A)


def test_mirrored_operator_reconstructs_the_mirror_image(tiny_problem):
    """A solver run with ``A M`` on the same sinogram returns the mirror image of the plain run (SIRT and TV)."""
    from ctresample.methods.resample import Frame, Framed, _warm_start_image

    geom, hu, y = tiny_problem
    A = projector_for(geom)
    for start in ("sirt", "tv"):
        cfg = ResampleConfig(warm_start=start, warm_start_iterations=30, warm_start_tv_iterations=60)
        x, _ = _warm_start_image(A, y, cfg)
        x_m, _ = _warm_start_image(Framed(A, Frame("mirror")), y, cfg)
        mirrored_back, unmirrored = (x_m.flip(-1) - x).abs(), (x_m - x).abs()
        assert float(unmirrored.mean()) > 20.0  # the slices are not symmetric: the images differ
        if start == "sirt":
            assert float(mirrored_back.max()) <= 1e-3
        else:  # isotropic TV's forward differences are not mirror-symmetric: close, not equal
            assert float(mirrored_back.mean()) <= 0.15 * float(unmirrored.mean()), start


def test_mirror_average_is_the_pair_mean(tiny_prior, tiny_problem):
    """``mirror_average``: a second chain on the mirror image, flipped back and averaged with the first (run one
    after the other: ``frame_rows: 0``)."""
    from ctresample.methods.resample import Frame, Framed

    geom, hu, y = tiny_problem
    cfg = {**FAST, "frames": ("identity", "mirror"), "frame_rows": 0}
    out = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(4), prior=tiny_prior)
    A = projector_for(geom)
    g = _gen(4)
    x, info = resample(tiny_prior, A, y, ResampleConfig(**cfg), g)
    x_m, _ = resample(tiny_prior, Framed(A, Frame("mirror")), y, ResampleConfig(**cfg), g)
    torch.testing.assert_close(out.image, 0.5 * (x + x_m.flip(-1)))
    assert float((x - x_m.flip(-1)).abs().max()) > 0  # the two chains differ
    assert out.info["nfe"] == 2 * info["nfe"] == nfe_per_sample(ResampleConfig(**cfg))
    assert nfe_per_sample(ResampleConfig(**cfg)) == 2 * nfe_per_sample(ResampleConfig(**FAST))
    assert out.info["decoder_calls"] == 2 * info["decoder_calls"]
    assert len(out.info["inner_iterations"]) == 2
    post = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(4), prior=tiny_prior,
                                  n_samples=2)
    assert post.image.shape == (2, 1, 32, 32) and post.std.shape == (2, 1, 32, 32)
    assert post.info["nfe"] == 2 * out.info["nfe"]


@pytest.mark.parametrize("name", ["identity", "mirror", "shift", "mirror+shift"])
def test_frames_are_pixel_permutations(tiny_problem, name):
    """Each frame ``T`` is undone by its inverse; ``A T^-1`` has the exact adjoint ``T A^T`` and ``A``'s norm."""
    from ctresample.methods.resample import Frame, Framed
    from ctresample.solvers.cg import operator_norm_sq

    geom, hu, y = tiny_problem
    A = projector_for(geom)
    T = Frame(name, shift=3)
    g = _gen(1)
    x = torch.rand(2, 1, 32, 32, generator=g)
    r = torch.rand(2, 1, *geom.sinogram_shape, generator=g)
    torch.testing.assert_close(T.inverse(T(x)), x, rtol=0, atol=0)
    assert (name == "identity") == bool(torch.equal(T(x), x))
    if name == "shift":
        assert torch.equal(T(x)[..., 3:, 3:], x[..., :-3, :-3])  # down and right by 3 pixels
    ref = x.flip(-1) if T.mirror else x
    ref = ref.roll((T.shift, T.shift), (-2, -1))
    assert torch.equal(T(x), ref)  # the block copies are torch's roll, also on the solver's batch-innermost images
    from ctresample.solvers.tv import batch_last
    xb = batch_last(x)
    assert torch.equal(T(xb), ref) and torch.equal(T.inverse(T(xb)), x)
    At = Framed(A, T)
    torch.testing.assert_close(At(x), A(T.inverse(x)))
    lhs, rhs = (At(x) * r).sum(), (x * At.adjoint(r)).sum()
    assert abs(float(lhs - rhs)) <= 1e-5 * abs(float(lhs))
    assert operator_norm_sq(At) == operator_norm_sq(A) and At.geometry == geom


def test_framed_operator_reconstructs_the_image_in_its_frame(tiny_problem):
    """SIRT run with ``A T^-1`` on the plain sinogram returns ``T`` of the plain run: a shift frame moves it."""
    from ctresample.methods.resample import Frame, Framed, _warm_start_image

    geom, hu, y = tiny_problem
    A = projector_for(geom)
    cfg = ResampleConfig(warm_start="sirt", warm_start_iterations=30)
    x, _ = _warm_start_image(A, y, cfg)
    for name in ("shift", "mirror+shift"):
        T = Frame(name, shift=2)
        x_t, _ = _warm_start_image(Framed(A, T), y, cfg)
        assert float((x_t - x).abs().mean()) > 20.0  # the image moved
        assert float((T.inverse(x_t) - x).abs().max()) <= 1e-3, name


def test_frames_average_is_the_mean_of_the_chains(tiny_prior, tiny_problem):
    """``frames``: one chain per frame, each moved back and averaged, the shift frames left out within
    ``frame_border`` pixels of the edges; NFE, decoder calls and solves count all chains (one frame after another:
    ``frame_rows: 0``; side by side in the next test)."""
    from ctresample.methods.resample import Frame, Framed

    geom, hu, y = tiny_problem
    names = ["identity", "mirror", "shift"]
    A = projector_for(geom)
    for border in (0, 5):
        cfg = {**FAST, "frames": names, "frame_border": border, "frame_rows": 0}
        out = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(5), prior=tiny_prior)
        g = _gen(5)
        chains = []
        for name in names:
            T = Frame(name)
            x_t, info = resample(tiny_prior, Framed(A, T), y, ResampleConfig(**cfg), g)
            chains.append(T.inverse(x_t))
        inner = slice(border, 32 - border) if border else slice(None)
        torch.testing.assert_close(out.image[..., inner, inner], (sum(chains) / 3)[..., inner, inner])
        if border:  # near the edges only the identity and mirror chains count
            torch.testing.assert_close(out.image[..., :border, :], ((chains[0] + chains[1]) / 2)[..., :border, :])
            torch.testing.assert_close(out.image[..., :, -border:], ((chains[0] + chains[1]) / 2)[..., :, -border:])
            assert float((out.image - sum(chains) / 3).abs()[..., :border, :].max()) > 0
    assert float((chains[2] - chains[0]).abs().max()) > 0  # the shift chain differs
    assert out.info["nfe"] == 3 * info["nfe"] == nfe_per_sample(ResampleConfig(**cfg))
    assert out.info["decoder_calls"] == 3 * info["decoder_calls"] and out.info["frames"] == names
    assert out.info["inner_iterations"][0] == 3 * info["inner_iterations"][0]
    # shift frames alone: their plain average everywhere (nothing else covers the edges)
    only = ctresample.reconstruct(y, geom, method="resample", config={**FAST, "frames": ["shift"]},
                                  generator=_gen(5), prior=tiny_prior)
    x_s, _ = resample(tiny_prior, Framed(A, Frame("shift")), y, ResampleConfig(**FAST), _gen(5))
    torch.testing.assert_close(only.image, Frame("shift").inverse(x_s))


def test_frame_stack_is_each_frames_operator_side_by_side(tiny_problem):
    """``FrameStack``: block f of the rows gets ``A T_f^-1`` (the Framed operator), with the exact adjoint and the norm
    of ``A``; ``stack`` moves one image into every frame; a batch of another size is refused."""
    from ctresample.methods.resample import Frame, Framed, FrameStack
    from ctresample.solvers.cg import operator_norm_sq
    from ctresample.solvers.tv import batch_last

    geom, hu, y = tiny_problem
    A = projector_for(geom)
    frames = [Frame(n, 3) for n in Frame.NAMES]
    S = FrameStack(A, frames, rows=2)
    g = _gen(2)
    x = torch.rand(8, 1, 32, 32, generator=g)
    r = torch.rand(8, 1, *geom.sinogram_shape, generator=g)
    for xi in (x, batch_last(x)):  # the solver's batch-innermost layout too
        fx, ar = S(xi), S.adjoint(batch_last(r) if xi is not x else r)
        for f, T in enumerate(frames):
            block = slice(2 * f, 2 * f + 2)
            torch.testing.assert_close(fx[block], Framed(A, T)(x[block]), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(ar[block], Framed(A, T).adjoint(r[block]), rtol=1e-6, atol=1e-6)
    lhs, rhs = (S(x).double() * r).sum(), (x * S.adjoint(r)).double().sum()
    assert abs(float(lhs - rhs)) <= 1e-5 * abs(float(lhs))
    assert operator_norm_sq(S) == operator_norm_sq(A) and S.geometry == geom
    assert torch.equal(S.stack(x[:2]), torch.cat([T(x[:2]) for T in frames]))
    p, q = r[:2], torch.rand(2, 2, 32, 32, generator=g)
    sp, sq = S.stack_dual((p, q))
    assert torch.equal(sp, p.repeat(4, 1, 1, 1)) and torch.equal(sq, torch.cat([T.dual((p, q))[1] for T in frames]))
    assert S.stack_dual(None) is None
    with pytest.raises(ValueError, match="4 frames x 2 rows"):
        S(x[:6])


def test_frame_groups_fill_frame_rows():
    from ctresample.methods.resample import frame_groups

    names = ["identity", "mirror", "shift", "mirror+shift"]
    assert frame_groups(names, 8, 32) == [names]  # the default's batch of 8: all four side by side
    assert frame_groups(names, 16, 32) == [names[:2], names[2:]]
    assert frame_groups(names, 12, 32) == [names[:2], names[2:]]
    assert frame_groups(names, 32, 32) == [[n] for n in names] == frame_groups(names, 64, 32)
    assert frame_groups(names, 8, 0) == [[n] for n in names]  # 0: one after another
    assert frame_groups(names[:3], 1, 32) == [names[:3]]
    from ctresample.methods.resample import _check

    with pytest.raises(ValueError, match="frame_rows"):
        _check(ResampleConfig(frame_rows=-1))


def test_frames_side_by_side_are_one_stacked_chain(tiny_prior, tiny_problem):
    """``frame_rows``: the frames that fit run as one chain on the stacked batch (FrameStack, the shared warm start
    moved into each frame), moved back and averaged as the frames one after another are; counts per chain."""
    from ctresample.methods.resample import Frame, FrameStack, _warm_start_image

    geom, hu, y = tiny_problem
    names = ["identity", "mirror", "shift", "mirror+shift"]
    cfg = {**FAST, "frames": names, "frame_border": 0, "pixel_solver": "tv", "tv_iterations": 3,
           "final_consistency": "last", "warm_start": "tv", "warm_start_tv_iterations": 6,
           "warm_start_fraction": 0.5, "frame_warm_start": "shared", "frame_polish_iterations": 0}
    out = ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(6), prior=tiny_prior)
    A = projector_for(geom)
    frames = [Frame(n) for n in names]
    S = FrameStack(A, frames, rows=y.shape[0])
    c = ResampleConfig(**cfg)
    img, (p, q) = _warm_start_image(A, y, c)
    warm = (S.stack(img), (p.repeat(4, 1, 1, 1), torch.cat([T.dual((p, q))[1] for T in frames])))
    x, info = resample(tiny_prior, S, y.repeat(4, 1, 1, 1), c, _gen(6), warm=warm)
    n = y.shape[0]
    back = sum(T.inverse(x[n * f:n * (f + 1)]) for f, T in enumerate(frames)) / 4
    torch.testing.assert_close(out.image, back)
    assert out.info["nfe"] == 4 * info["nfe"] == nfe_per_sample(c)
    assert out.info["decoder_calls"] == 4 * info["decoder_calls"] and out.info["frames"] == names
    assert out.info["inner_iterations"] == [sum(info["inner_iterations"][r::n]) for r in range(n)]
    one_by_one = ctresample.reconstruct(y, geom, method="resample", config={**cfg, "frame_rows": 0},
                                        generator=_gen(6), prior=tiny_prior)
    assert one_by_one.info["inner_iterations"] == out.info["inner_iterations"]
    assert float((one_by_one.image - out.image).abs().max()) > 0  # other random draws: another sample


def test_frame_polish_is_one_more_final_solve_from_the_average(tiny_prior, tiny_problem):
    """``frame_polish_*``: the frames' average passes one more TV solve (its own TV weight and flat pull, the final
    solve's other settings), started from and pulled towards it, on the slices where the noise estimated from the
    average's data residual is at most ``frame_polish_max_sigma`` only; its iterations are counted; 0 leaves the
    average as it is."""
    from dataclasses import replace

    from ctresample.solvers import estimate_noise_sigma

    geom, hu, y = tiny_problem
    noisy = y.clone()
    noisy[1] = noisy[1] + 0.05 * torch.randn(noisy[1].shape, generator=_gen(7))
    cfg = {**FAST, "pixel_solver": "tv", "tv_iterations": 5, "tv_final_iterations": 7, "frames": ["identity", "mirror"],
           "noise_sigma": "auto"}
    plain = ctresample.reconstruct(noisy, geom, method="resample", config=cfg, generator=_gen(6), prior=tiny_prior)
    A = projector_for(geom)
    # the rule's statistic: the noise std estimated from the average's data residual, low on the clean slice
    sigma = estimate_noise_sigma(noisy - A(ctresample.hu_to_mu(plain.image)))
    assert float(sigma[0]) < float(sigma[1])
    gate = float((sigma[0] * sigma[1]).sqrt())
    polish = {"frame_polish_iterations": 9, "frame_polish_lambda": 3e-5, "frame_polish_flat_weight": 0.0,
              "frame_polish_max_sigma": gate}
    pcfg = replace(ResampleConfig(**cfg), tv_final_iterations=9, tv_final_lambda=3e-5, final_anchor_flat_weight=0.0)
    dc = _Consistency(tiny_prior, A, noisy, pcfg)
    expected = dc.pixel_solve(plain.image, final=True).clamp(-1024, 3071)
    # every slice (no gate)
    every = ctresample.reconstruct(noisy, geom, method="resample", config={**cfg, **polish,
                                   "frame_polish_max_sigma": None}, generator=_gen(6), prior=tiny_prior)
    torch.testing.assert_close(every.image, expected)
    assert every.info["frame_polished"] == [True, True]
    assert every.info["nfe"] == plain.info["nfe"]  # no network call
    assert every.info["inner_iterations"] == [p + int(i) for p, i in zip(plain.info["inner_iterations"], dc.inner,
                                                                         strict=True)]
    assert int(dc.inner[0]) > 0
    # the gate between them: the clean slice polished, the noisy one left as the average
    gated = ctresample.reconstruct(noisy, geom, method="resample", config={**cfg, **polish}, generator=_gen(6),
                                   prior=tiny_prior)
    assert gated.info["frame_polished"] == [True, False]
    torch.testing.assert_close(gated.image[0], expected[0])
    torch.testing.assert_close(gated.image[1], plain.image[1])
    assert float((gated.image[0] - plain.image[0]).abs().max()) > 0
    assert gated.info["inner_iterations"][1] == plain.info["inner_iterations"][1]
    # its own TV weight: the final solve's (None) gives another image
    final_lam = ctresample.reconstruct(noisy, geom, method="resample", generator=_gen(6), prior=tiny_prior,
                                       config={**cfg, **polish, "frame_polish_lambda": None})
    assert float((final_lam.image[0] - gated.image[0]).abs().max()) > 0
    one = ctresample.reconstruct(y, geom, method="resample", generator=_gen(6), prior=tiny_prior,
                                 config={**cfg, **polish, "frames": ["identity"]})
    alone = ctresample.reconstruct(y, geom, method="resample", generator=_gen(6), prior=tiny_prior,
                                   config={**cfg, "frames": ["identity"]})
    torch.testing.assert_close(one.image, alone.image)  # one frame: nothing averaged, nothing to polish
    for bad in ({"frame_polish_iterations": -1}, {"frame_polish_lambda": -1e-5}, {"frame_polish_max_sigma": -1.0},
                {"frame_polish_flat_weight": -0.1}):
        with pytest.raises(ValueError, match="frame_polish"):
            ctresample.reconstruct(y, geom, method="resample", config={**cfg, **bad}, prior=tiny_prior)


def test_frame_dual_is_the_gradient_dual_of_the_framed_image():
    """``Frame.dual`` moves the TV duals as the image moves: for the forward differences of an image it gives
    those of the image in the frame (exactly for the mirror, except at the wrapped edge for shifts); ``p``,
    which lives in the shared sinogram, is kept."""
    from ctresample.methods.resample import Frame
    from ctresample.solvers.tv import gradient

    u = torch.randn(2, 1, 16, 16, generator=_gen(3))
    p = torch.randn(2, 1, 5, 7, generator=_gen(4))
    for name in ("identity", "mirror", "shift", "mirror+shift"):
        T = Frame(name, shift=2)
        p_t, q_t = T.dual((p, gradient(u)))
        assert p_t is p
        err = (q_t - gradient(T(u))).abs()
        assert float(err[..., 3:-3, 3:-3].max()) == 0.0, name
        assert (float(err.max()) == 0.0) == (not T.shift), name
    assert Frame("mirror").dual(None) is None


def test_shared_warm_start_is_solved_once_and_moved_into_each_frame(tiny_prior, tiny_problem, monkeypatch):
    """``frame_warm_start: shared``: one warm-start solve in the slice's frame; each frame's chain starts from it
    moved into that frame (its duals too), so the identity chain is the one run with ``each``; other chains differ
    from their own solves only by the discretisation's small lack of symmetry."""
    from ctresample.methods import resample as rs

    geom, hu, y = tiny_problem
    cfg = {**FAST, "warm_start": "tv", "warm_start_tv_iterations": 20, "warm_start_fraction": 0.5,
           "pixel_solver": "tv", "tv_iterations": 5, "frames": ["identity", "mirror", "shift"],
           "frame_warm_start": "each"}
    calls = []
    original = rs._warm_start_image

    def counted(A, y_, c):
        calls.append(type(A).__name__)
        return original(A, y_, c)

    monkeypatch.setattr(rs, "_warm_start_image", counted)
    each = ctresample.reconstruct(y, geom, method="resample", config={**cfg, "frame_rows": 0}, generator=_gen(8),
                                  prior=tiny_prior)
    assert len(calls) == 3  # one frame after another: a solve each
    calls.clear()
    ctresample.reconstruct(y, geom, method="resample", config=cfg, generator=_gen(8), prior=tiny_prior)
    assert calls == ["FrameStack"]  # side by side: each frame's solve, all in one
    calls.clear()
    shared = ctresample.reconstruct(y, geom, method="resample",
                                    config={**cfg, "frame_warm_start": "shared", "frame_rows": 0},
                                    generator=_gen(8), prior=tiny_prior)
    assert calls == ["ParallelBeamProjector"]  # once, with the plain operator
    assert shared.info["nfe"] == each.info["nfe"]
    diff = float((shared.image - each.image).abs().mean())
    assert 0.0 < diff < 0.05 * float(each.image.std())
    # the identity chain alone: the same start, so the same chain
    one = {**cfg, "frames": ["identity"]}
    a = ctresample.reconstruct(y, geom, method="resample", config=one, generator=_gen(8), prior=tiny_prior)
    b = ctresample.reconstruct(y, geom, method="resample", config={**one, "frame_warm_start": "shared"},
                               generator=_gen(8), prior=tiny_prior)
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
    with pytest.raises(ValueError, match="frame_warm_start"):
        ctresample.reconstruct(y, geom, method="resample", config={**cfg, "frame_warm_start": "once"},
                               prior=tiny_prior)


def test_frames_refuses_bad_names_and_maps_the_older_key():
    from ctresample.methods.resample import chain_frames

    assert chain_frames(ResampleConfig()) == ["identity", "mirror", "shift", "mirror+shift"]
    assert chain_frames(ResampleConfig(mirror_average=False)) == ["identity"]
    assert chain_frames(ResampleConfig(mirror_average=True)) == ["identity", "mirror"]
    assert chain_frames(ResampleConfig(frames=("shift",))) == ["shift"]
    for frames, match in ((("rotate",), "unknown frame 'rotate'"), (("shift+mirror",), "unknown frame"),
                          (("mirror", "mirror"), "must not repeat"), ((), "at least one frame")):
        with pytest.raises(ValueError, match=match):
            chain_frames(ResampleConfig(frames=frames))
    with pytest.raises(ValueError, match="not both"):
        chain_frames(ResampleConfig(frames=("identity", "mirror", "shift"), mirror_average=True))
    with pytest.raises(ValueError, match="frame_border"):
        chain_frames(ResampleConfig(frame_border=-1))
    with pytest.raises(ValueError, match="frame_shift"):
        chain_frames(ResampleConfig(frames=("identity", "shift"), frame_shift=0))


def test_network_dtype_auto_follows_the_hardware(tiny_prior, tiny_problem, monkeypatch):
    """``auto`` runs bfloat16 only on a CPU with bf16 units (and records what ran); elsewhere float32."""
    from ctresample.methods.resample import resolve_network_dtype

    geom, hu, y = tiny_problem
    for caps, expected in (({"avx512_bf16": True}, "bfloat16"), ({"amx_bf16": True}, "bfloat16"),
                           ({"avx512_bf16": False, "amx_bf16": False}, "float32")):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda caps=caps: caps)
        assert resolve_network_dtype("auto", "cpu") == expected
        assert resolve_network_dtype("float32", "cpu") == "float32"
        out = ctresample.reconstruct(y, geom, method="resample", config={**FAST, "network_dtype": "auto"},
                                     generator=_gen(5), prior=tiny_prior)
        same = ctresample.reconstruct(y, geom, method="resample", config={**FAST, "network_dtype": expected},
                                      generator=_gen(5), prior=tiny_prior)
        assert out.info["network_dtype"] == expected
        torch.testing.assert_close(out.image, same.image, rtol=0, atol=0)


def test_network_dtype_bfloat16(tiny_prior, tiny_problem):
    """``network_dtype: bfloat16`` runs the networks under autocast, close to float32; the rest stays float32."""
    from ctresample.methods.resample import AutocastPrior

    geom, hu, y = tiny_problem
    fast = AutocastPrior(tiny_prior, torch.bfloat16)
    z = tiny_prior.encode(hu)
    z_b = fast.encode(hu)
    x, x_b = tiny_prior.decode(z), fast.decode(z)
    assert z_b.dtype == x_b.dtype == fast.predict_eps(z, 3).dtype == torch.float32
    # bf16 rounding (8 bits of mantissa), not another network: mean error within 1 % (HU), 3 % (latents)
    assert 0 < float((x_b - x).abs().mean()) < 0.01 * float((x + 1024).abs().mean())
    assert 0 < float((z_b - z).abs().mean()) < 0.03 * float(z.abs().mean())
    a = ctresample.reconstruct(y, geom, method="resample", config=FAST, generator=_gen(5), prior=tiny_prior)
    b = ctresample.reconstruct(y, geom, method="resample", config={**FAST, "network_dtype": "bfloat16"},
                               generator=_gen(5), prior=tiny_prior)
    diff = (a.image - b.image).abs()
    assert b.image.dtype == torch.float32 and 0 < float(diff.max())
    assert float(diff.mean()) < 0.01 * float((a.image + 1024).abs().mean()), float(diff.mean())
    with pytest.raises(ValueError, match="network_dtype"):
        ctresample.reconstruct(y, geom, method="resample", config={**FAST, "network_dtype": "float16"},
                               prior=tiny_prior)


def test_default_schedule_follows_the_views(tiny_prior):
    """``num_inference_steps: null`` and ``warm_start_fraction: null`` (the default): 400 DDIM steps entered at
    0.96875 (t = 22) from 16 views, 200 entered at 0.875 (t = 120) below, 25 steps per chain there; a number is
    kept at any view count (a fixed step count keeps the 0.96875 entry), and so are the presets' schedules."""
    from ctresample.config import load_config
    from ctresample.methods.resample import FEW_VIEWS, for_views, steps_for, warm_start_fraction_for
    from operators import ParallelBeamGeometry

    d = ResampleConfig()
    assert d.num_inference_steps is None and d.warm_start_fraction is None and FEW_VIEWS == 16
    assert [steps_for(d, v) for v in (None, 25, 16, 15, 10)] == [400, 400, 400, 200, 200]
    assert [warm_start_fraction_for(d, v) for v in (None, 25, 16, 15, 10)] == [0.96875] * 3 + [0.875] * 2
    assert nfe_per_sample(d) == nfe_per_sample(d, 25) == 48 and nfe_per_sample(d, 10) == 100
    assert steps_for(ResampleConfig(num_inference_steps=400), 10) == 400
    assert warm_start_fraction_for(ResampleConfig(num_inference_steps=800), 10) == 0.96875
    assert warm_start_fraction_for(ResampleConfig(warm_start_fraction=0.9), 10) == 0.9
    assert steps_for(ResampleConfig(warm_start_fraction=0.9), 10) == 200
    ten = for_views(load_config(ResampleConfig, "resample_10v"), 10)
    assert (ten.num_inference_steps, ten.warm_start_fraction) == (200, 0.875)
    full = for_views(load_config(ResampleConfig, "resample_full"), 10)
    assert (full.num_inference_steps, full.warm_start_fraction) == (800, 0.96875)
    geom = ParallelBeamGeometry(image_size=32, n_views=10)
    with pytest.raises(ValueError, match="warm_start_fraction"):
        ctresample.reconstruct(projector_for(geom)(torch.zeros(1, 1, 32, 32)), geom, method="resample",
                               config={**FAST, "warm_start_fraction": 1.0}, prior=tiny_prior)
    cfg = {**FAST, "warm_start": "fbp", "warm_start_fraction": None, "num_inference_steps": None}
    for views, steps, fraction, nfe in ((10, 200, 0.875, 25), (25, 400, 0.96875, 12)):
        geom = ParallelBeamGeometry(image_size=32, n_views=views)
        y = projector_for(geom)(torch.full((1, 1, 32, 32), 0.02))
        out = ctresample.reconstruct(y, geom, method="resample", config=cfg, prior=tiny_prior, generator=_gen(0))
        assert out.info["warm_start_fraction"] == fraction, views
        assert out.info["num_inference_steps"] == steps and out.info["nfe"] == nfe, views
        # resample() on its own reads the views from the operator
        x, info = resample(tiny_prior, projector_for(geom), y, ResampleConfig(**cfg), _gen(0))
        assert info["nfe"] == nfe
    explicit = ctresample.reconstruct(y, geom, method="resample", config={**cfg, "num_inference_steps": 800},
                                      prior=tiny_prior, generator=_gen(0))
    assert explicit.info["num_inference_steps"] == 800  # at 25 views, as asked
    with pytest.raises(ValueError, match="num_inference_steps"):
        ctresample.reconstruct(y, geom, method="resample", config={**cfg, "num_inference_steps": 0},
                               prior=tiny_prior)
