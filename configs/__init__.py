"""YAML presets, shipped as the package ``ctresample.configs`` (``pyproject.toml`` maps this folder there).

Load one by name: ``ctresample.load_config(ResampleConfig, "resample_paper")``; list them with
``ctresample.config.available_presets()``. Each key is commented with what it trades off.
"""
