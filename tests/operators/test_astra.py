"""Cross-check against astra-toolbox's CPU `linear` projector (optional: runs when astra is installed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from operators import ParallelBeamGeometry, ParallelBeamProjector, fbp

astra = pytest.importorskip("astra", reason="astra-toolbox not installed (pip install 'ctresample[astra]')")


def astra_project(g: ParallelBeamGeometry, image: np.ndarray) -> np.ndarray:
    h, w = g.image_shape
    ps = g.pixel_size
    vg = astra.create_vol_geom(h, w, -w / 2 * ps, w / 2 * ps, -h / 2 * ps, h / 2 * ps)
    pg = astra.create_proj_geom("parallel", g.detector_spacing, g.n_detectors, g.view_angles())
    pid = astra.create_projector("linear", pg, vg)
    try:
        sid, sino = astra.create_sino(image.astype(np.float32), pid)
        astra.data2d.delete(sid)
    finally:
        astra.projector.delete(pid)
    return sino


def astra_fbp(g: ParallelBeamGeometry, sino: np.ndarray) -> np.ndarray:
    h, w = g.image_shape
    ps = g.pixel_size
    vg = astra.create_vol_geom(h, w, -w / 2 * ps, w / 2 * ps, -h / 2 * ps, h / 2 * ps)
    pg = astra.create_proj_geom("parallel", g.detector_spacing, g.n_detectors, g.view_angles())
    pid = astra.create_projector("linear", pg, vg)
    sid = astra.data2d.create("-sino", pg, sino.astype(np.float32))
    rid = astra.data2d.create("-vol", vg)
    cfg = astra.astra_dict("FBP")
    cfg.update(ProjectorId=pid, ProjectionDataId=sid, ReconstructionDataId=rid)
    alg = astra.algorithm.create(cfg)
    try:
        astra.algorithm.run(alg)
        return astra.data2d.get(rid)
    finally:
        astra.algorithm.delete(alg)
        astra.data2d.delete([sid, rid])
        astra.projector.delete(pid)


def smooth_phantom(g):
    h, w = g.image_shape
    yy, xx = np.mgrid[:h, :w]
    x = (xx - (w - 1) / 2) / (w / 2)
    y = ((h - 1) / 2 - yy) / (h / 2)
    img = np.exp(-((x - 0.2) ** 2 + (y + 0.1) ** 2) / 0.2) + 0.5 * ((x + 0.3) ** 2 + (y - 0.3) ** 2 < 0.05)
    img[10:14, 5 : w // 2] = 2.0  # asymmetric bar: catches flips and angle conventions
    return img * 0.02


@pytest.mark.parametrize(
    "kw",
    [
        dict(image_size=128, pixel_size=1.0, n_views=25),
        dict(image_size=(96, 128), pixel_size=0.8, n_views=60, detector_spacing=0.6),
        dict(image_size=101, pixel_size=2.0, n_views=17, n_detectors=80, detector_spacing=2.5),
    ],
)
def test_sinogram_matches_astra(kw):
    g = ParallelBeamGeometry(**kw)
    img = smooth_phantom(g)
    ours = ParallelBeamProjector(g)(torch.tensor(img)[None, None])[0, 0].numpy()
    ref = astra_project(g, img)
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 0.02


def test_fbp_matches_astra():
    g = ParallelBeamGeometry(image_size=128, pixel_size=1.5, n_views=180)
    img = smooth_phantom(g)
    sino = ParallelBeamProjector(g)(torch.tensor(img)[None, None])
    ours = fbp(sino, g)[0, 0].numpy()
    ref = astra_fbp(g, sino[0, 0].numpy())
    h, w = g.image_shape
    yy, xx = np.mgrid[:h, :w]
    inside = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (0.45 * w) ** 2
    rel = np.linalg.norm((ours - ref)[inside]) / np.linalg.norm(ref[inside])
    assert rel < 0.05, rel
