"""Acquisition geometry (the value type lives in :mod:`operators`; re-exported here)."""
from operators.geometry import ParallelBeamGeometry

__all__ = ["ParallelBeamGeometry"]
