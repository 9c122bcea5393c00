import math

import numpy as np
import pytest

from operators import ParallelBeamGeometry


def test_defaults_cover_diagonal():
    g = ParallelBeamGeometry(image_size=256, pixel_size=1.0, n_views=25)
    assert g.n_detectors * g.detector_spacing >= math.sqrt(2) * 256
    assert g.detector_spacing == 1.0
    assert g.sinogram_shape == (25, g.n_detectors)
    a = g.view_angles()
    assert a[0] == 0 and a[-1] < math.pi and np.allclose(np.diff(a), math.pi / 25)


def test_keyword_only():
    with pytest.raises(TypeError):
        ParallelBeamGeometry(256, 1.0, 25)


def test_repr_rebuilds_and_dict_round_trip():
    g = ParallelBeamGeometry(image_size=(30, 40), pixel_size=0.5, n_views=7, detector_spacing=0.25)
    assert eval(repr(g), {"ParallelBeamGeometry": ParallelBeamGeometry}) == g
    assert ParallelBeamGeometry.from_dict(g.to_dict()) == g
    g2 = ParallelBeamGeometry(image_size=8, angles=[0.1, 0.2])
    assert ParallelBeamGeometry.from_dict(g2.to_dict()) == g2


def test_equality_with_tolerance_and_hash():
    a = ParallelBeamGeometry(image_size=16, pixel_size=1.0, n_views=5)
    b = ParallelBeamGeometry(image_size=16, pixel_size=1.0 + 1e-12, n_views=5)
    c = ParallelBeamGeometry(image_size=16, pixel_size=1.1, n_views=5)
    assert a == b and hash(a) == hash(b)
    assert a != c


def test_explicit_angles_override_and_slicing():
    g = ParallelBeamGeometry(image_size=16, n_views=99, angles=[0.0, 1.0, 2.0])
    assert g.n_views == 3
    sub = ParallelBeamGeometry(image_size=16, n_views=10).with_angles(slice(0, None, 2))
    assert sub.n_views == 5 and np.allclose(sub.view_angles(), np.arange(5) * 2 * math.pi / 10)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(image_size=0), "positive"),
        (dict(pixel_size=-1.0), "pixel_size"),
        (dict(n_views=0), "n_views"),
        (dict(detector_spacing=0.0), "detector_spacing"),
        (dict(angles=[]), "at least one"),
        (dict(n_detectors=0), "n_detectors"),
        (dict(image_size=(1, 2, 3)), "image_size"),
    ],
)
def test_bad_geometry(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ParallelBeamGeometry(**kw)


def test_unknown_keys_rejected():
    with pytest.raises(ValueError, match="unknown geometry keys"):
        ParallelBeamGeometry.from_dict({"image_size": 8, "sid": 3})
