"""Presets ship with the package and resolve by name; the public API imports from the top."""
import dataclasses

import pytest

from ctresample.config import available_presets, load_config, preset_path, resolve_config_path


def test_presets_resolve_through_the_package():
    names = available_presets()
    assert {"resample", "resample_paper", "latent_dps", "fbp_unet", "data_split", "train_autoencoder",
            "train_diffusion", "train_diffusion_finetune", "train_fbp_unet"} <= set(names)
    path = preset_path("resample_paper")
    assert path.is_file() and path.name == "resample_paper.yaml"
    assert preset_path("no_such_preset") is None and preset_path("../pyproject") is None


def test_load_config_sources_and_errors(tmp_path):
    from ctresample import ResampleConfig

    assert load_config(ResampleConfig, "resample_paper").num_inference_steps == 500
    assert load_config(ResampleConfig, {"eta": 0.5}).eta == 0.5
    assert load_config(ResampleConfig, None, overrides={"gamma": 3.0}).gamma == 3.0
    f = tmp_path / "c.yaml"
    f.write_text("eta: 0.25\n")
    assert load_config(ResampleConfig, f).eta == 0.25 and resolve_config_path(f) == f
    with pytest.raises(ValueError, match="unknown key"):
        load_config(ResampleConfig, {"etaa": 1})
    with pytest.raises(FileNotFoundError, match="presets: .*resample_paper"):
        load_config(ResampleConfig, "resample_papr")


def test_public_api():
    import ctresample
    import operators
    from ctresample import (  # noqa: F401
        LatentDiffusionPrior,
        MethodSpec,
        ParallelBeamGeometry,
        ParallelBeamProjector,
        ReconstructionOutput,
        ResampleConfig,
        available_methods,
        method_spec,
        read_image,
        reconstruct,
    )
    from ctresample.models import FBPConvNet
    from ctresample.models import LatentDiffusionPrior as FromModels

    assert ParallelBeamGeometry is operators.ParallelBeamGeometry and FromModels is LatentDiffusionPrior
    assert dataclasses.is_dataclass(ResampleConfig) and FBPConvNet.__name__ == "FBPConvNet"
    assert set(ctresample.__all__) <= set(dir(ctresample))
    with pytest.raises(AttributeError):
        ctresample.no_such_name  # noqa: B018


def _changed_keys(preset: str) -> set[str]:
    """The ResampleConfig fields where ``preset`` differs from the default preset."""
    import dataclasses

    from ctresample.methods.resample import ResampleConfig

    other, default = load_config(ResampleConfig, preset), load_config(ResampleConfig, "resample")
    return {f.name for f in dataclasses.fields(ResampleConfig) if getattr(other, f.name) != getattr(default, f.name)}


def _entry_timestep(cfg, n_views: int = 25) -> int:
    """The timestep the warm start noises to, on the scheduler of the prior ``cfg`` loads, at ``n_views`` views."""
    from pathlib import Path

    from diffusers import DDIMScheduler

    from ctresample.methods.resample import steps_for, warm_start_index, weights_folder

    s = DDIMScheduler.from_pretrained(Path(weights_folder(cfg)) / "scheduler")
    s.set_timesteps(steps_for(cfg, n_views))
    from ctresample.methods.resample import for_views

    return int(s.timesteps[warm_start_index(for_views(cfg, n_views))])


def test_resample_fast_preset_differs_from_the_default_only_in_its_cost_keys():
    """``resample_fast`` lists only what it changes; everything else follows the default."""
    from ctresample.methods.resample import ResampleConfig, chain_frames, nfe_per_sample

    assert _changed_keys("resample_fast") == {"skip_interval", "tv_iterations", "warm_start_tv_iterations",
                                              "tv_warm_dual", "final_consistency", "num_inference_steps",
                                              "warm_start_fraction", "frames"}
    # the schedule is pinned to the one it was measured with: one chain of 25 UNet evaluations, the default four of 12
    fast, default = load_config(ResampleConfig, "resample_fast"), load_config(ResampleConfig, "resample")
    assert nfe_per_sample(fast) == 25 and nfe_per_sample(default) == 48
    assert len(chain_frames(default)) > 1 and chain_frames(fast) == ["identity"]


def test_resample_10v_preset_is_the_default_entered_earlier():
    """``resample_10v`` changes the schedule (25 UNet evaluations per chain, from a noisier entry t) and runs one
    chain, as it was measured."""
    from ctresample.methods.resample import ResampleConfig, nfe_per_sample

    assert _changed_keys("resample_10v") == {"num_inference_steps", "warm_start_fraction", "frames", "tv_iterations"}
    sparse, default = load_config(ResampleConfig, "resample_10v"), load_config(ResampleConfig, "resample")
    assert nfe_per_sample(sparse) == 25 and nfe_per_sample(default) == 48

    assert _entry_timestep(default) == 22 and _entry_timestep(sparse) == 120
    assert _entry_timestep(default, n_views=10) == 120 and _entry_timestep(sparse, n_views=10) == 120
    assert nfe_per_sample(default, 10) == 100 and nfe_per_sample(sparse, 10) == 25  # 200 steps below 16 views


def test_resample_full_preset_is_the_previous_default_on_a_finer_schedule():
    """``resample_full`` changes the step count, the iterations per step, the warm start per frame and runs the frames
    one after another: twice the default's UNet evaluations from nearly the same entry (at 25 views; below 16 the
    default's steps are the same)."""
    from ctresample.methods.resample import ResampleConfig, nfe_per_sample

    assert _changed_keys("resample_full") == {"num_inference_steps", "tv_iterations", "frame_warm_start", "frame_rows"}
    full, default = load_config(ResampleConfig, "resample_full"), load_config(ResampleConfig, "resample")
    assert nfe_per_sample(full) == 100 and nfe_per_sample(default) == 48  # both average four frames' chains
    assert _entry_timestep(full) == 24 and _entry_timestep(default) == 22
    assert (full.tv_iterations, default.tv_iterations) == (50, 80)
    assert (full.frame_warm_start, default.frame_warm_start) == ("each", "shared")
    assert (full.frame_rows, default.frame_rows) == (0, 32)
    assert nfe_per_sample(full, 10) == nfe_per_sample(default, 10) == 100
