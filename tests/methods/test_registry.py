"""The registry is the one source of truth: presets, weights, warm-up, and a new method is one entry."""
import pytest
import torch

import ctresample
from ctresample.config import load_config, preset_path
from ctresample.methods import MethodSpec, ReconstructionOutput, available_methods, method_spec, register_method
from ctresample.methods.registry import _REGISTRY


@pytest.mark.parametrize("name", [n for n in available_methods() if method_spec(n).preset])
def test_presets_exist_and_equal_the_code_defaults(name):
    """A config-less run is recorded by its preset (evaluation fingerprint): the two must agree."""
    spec = method_spec(name)
    assert preset_path(spec.preset) is not None, f"configs/{spec.preset}.yaml is missing"
    assert load_config(spec.config_class(), spec.preset) == spec.config_class()()


@pytest.mark.parametrize("name", [n for n in available_methods() if method_spec(n).weights])
def test_learned_methods_name_their_shipped_weights(name):
    folder = method_spec(name).weights_folder(None)
    assert folder.is_dir() and any(folder.rglob("*.safetensors")), folder
    other = method_spec(name).weights_folder({"prior" if "prior" in _fields(name) else "weights": "/elsewhere"})
    assert str(other) == "/elsewhere"


def _fields(name):
    import dataclasses

    return {f.name for f in dataclasses.fields(method_spec(name).config_class())}


def test_warm_up_loads_nothing_when_the_network_is_passed(monkeypatch):
    import ctresample.models.prior as prior_module

    calls = []
    monkeypatch.setattr(prior_module, "load_prior", lambda *a, **k: calls.append(a))
    import ctresample.methods.resample as resample_module

    monkeypatch.setattr(resample_module, "load_prior", lambda *a, **k: calls.append(a))
    method_spec("resample").prepare(None, "cpu", {"prior": object()})
    assert calls == []
    method_spec("resample").prepare(None, "cpu", {})
    assert calls == [(None, torch.device("cpu"))]


def test_a_new_method_is_one_entry(tiny_slices, tmp_path):
    """Registered once, it runs through reconstruct, the evaluation (with --samples) and the CLI's lists."""
    from ctresample.evaluation import EvaluationSettings, evaluate

    def noisy_fbp(sinogram, geometry, *, config=None, generator=None, n_samples=None):
        base = ctresample.reconstruct(sinogram, geometry, method="fbp").image
        k = n_samples or 1
        draws = torch.stack([base + 10 * torch.randn(base.shape, generator=generator) for _ in range(k)])
        info = {"nfe": 0, "inner_iterations": 0, "data_residual": [0.0] * len(base)}
        return ReconstructionOutput(draws.mean(0), info, draws.std(0) if k > 1 else None)

    register_method(MethodSpec("noisy-fbp", noisy_fbp, stochastic=True))
    try:
        assert "noisy-fbp" in available_methods()
        settings = EvaluationSettings(methods=("fbp", "noisy-fbp"), views=(8,), samples=3, batch_size=3,
                                      figure_slices=1, quiet=True)
        report = evaluate(tiny_slices, tmp_path / "r", settings)
        rows = {r["method"]: r for r in report.rows}
        assert report.ok and rows["noisy-fbp"]["posterior_std_hu_mean"] > 0  # the registry says: stochastic
        from ctresample.cli import build_parser

        args = build_parser().parse_args(["evaluate", "--out", "x", "--config-noisy-fbp", "a.yaml"])
        assert "noisy-fbp" in args.methods.split(",") and args.config_noisy_fbp == "a.yaml"
    finally:
        _REGISTRY.pop("noisy-fbp", None)


def test_register_method_as_decorator_and_by_name():
    @register_method("tmp-identity")
    def identity(sinogram, geometry, *, config=None, generator=None):
        return ReconstructionOutput(torch.zeros(sinogram.shape[0], 1, *geometry.image_shape))

    try:
        assert method_spec("tmp-identity").function is identity and not method_spec("tmp-identity").stochastic
        g = ctresample.ParallelBeamGeometry(image_size=8, n_views=3)
        out = ctresample.reconstruct(torch.zeros(3, g.n_detectors), g, method="tmp-identity")
        assert out.image.shape == (1, 1, 8, 8)
    finally:
        _REGISTRY.pop("tmp-identity", None)
