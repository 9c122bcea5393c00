"""The projector beyond the linear-operator suite (test_linear_operators.py): batches, caching, physics, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from operators import ParallelBeamGeometry, ParallelBeamProjector, fbp


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


def test_batch_equals_loop(rng):
    g = ParallelBeamGeometry(image_size=24, n_views=13)
    A = ParallelBeamProjector(g)
    x = torch.rand(4, 3, 24, 24, generator=rng)
    batched = A(x)
    looped = torch.stack([torch.stack([A(x[b : b + 1, c : c + 1])[0, 0] for c in range(3)]) for b in range(4)])
    assert torch.allclose(batched, looped, atol=1e-6)


def test_chunked_equals_cached(rng):
    g = ParallelBeamGeometry(image_size=32, n_views=30)
    cached = ParallelBeamProjector(g)
    chunked = ParallelBeamProjector(g, cache_nnz=0)  # rebuild per chunk, never cache
    x = torch.rand(2, 1, 32, 32, generator=rng, dtype=torch.float64)
    y = torch.rand(2, 1, *g.sinogram_shape, generator=rng, dtype=torch.float64)
    assert torch.allclose(cached(x), chunked(x))
    assert torch.allclose(cached.adjoint(y), chunked.adjoint(y))


@pytest.mark.parametrize("chunks", [1, 3])
def test_many_columns_use_the_same_sums(rng, monkeypatch, chunks):
    """From EMBEDDING_BAG_MIN_COLUMNS columns on a CPU, float32 products run as embedding_bag sums: the values
    of the CSR product (float64 reference), a matched adjoint, with one cached matrix or several view chunks."""
    import operators.projector as pj

    g = ParallelBeamGeometry(image_size=20, n_views=9)
    n = pj.EMBEDDING_BAG_MIN_COLUMNS + 3
    A = ParallelBeamProjector(g)
    if chunks > 1:
        monkeypatch.setattr(A, "_chunks", lambda: [slice(0, 4), slice(4, 7), slice(7, 9)])
    x = torch.rand(n, 1, 20, 20, generator=rng)
    y = torch.rand(n, 1, *g.sinogram_shape, generator=rng)
    calls = []
    original = pj.F.embedding_bag
    monkeypatch.setattr(pj.F, "embedding_bag", lambda *a, **k: calls.append(1) or original(*a, **k))
    fx, aty = A(x), A.adjoint(y)
    assert len(calls) == 2 * chunks  # the kernel was used, forward and adjoint
    ref = ParallelBeamProjector(g)
    assert torch.allclose(fx.double(), ref(x.double()), rtol=1e-5, atol=1e-5)
    assert torch.allclose(aty.double(), ref.adjoint(y.double()), rtol=1e-5, atol=1e-5)
    lhs, rhs = (fx.double() * y.double()).sum(), (x.double() * aty.double()).sum()
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    calls.clear()
    A(x[:2])  # few columns: torch's CSR product
    assert calls == []


def test_physical_scaling_water_cylinder():
    """Line integrals are dimensionless: a 300 mm water cylinder peaks near 300 * mu_water."""
    for n, ps in ((128, 400 / 128), (256, 400 / 256)):
        g = ParallelBeamGeometry(image_size=n, pixel_size=ps, n_views=8)
        h, w = g.image_shape
        yy, xx = np.mgrid[:h, :w]
        x = (xx - (w - 1) / 2) * ps
        y = ((h - 1) / 2 - yy) * ps
        mu = torch.tensor(np.where(x**2 + y**2 < 150**2, 0.0192, 0.0))[None, None]
        peak = ParallelBeamProjector(g)(mu).max().item()
        assert peak == pytest.approx(300 * 0.0192, rel=0.02)


def test_orientation_theta_zero_sums_columns():
    g = ParallelBeamGeometry(image_size=8, n_views=2, n_detectors=8)  # angles 0, pi/2
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    x[0, 0, 1, 6] = 1.0  # top row region, right column
    s = ParallelBeamProjector(g)(x)[0, 0]
    assert s[0].argmax().item() == 6  # theta=0: u = x, column 6 lands in bin 6
    assert s[1].argmax().item() == 6  # theta=pi/2: u = y, row 1 (y>0) lands in bin 8-1-1=6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype, rng):
    g = ParallelBeamGeometry(image_size=16, n_views=5)
    A = ParallelBeamProjector(g)
    x = torch.rand(1, 1, 16, 16, generator=rng).to(dtype)
    assert A(x).dtype == dtype
    assert A.adjoint(A(x)).dtype == dtype


def test_half_precision_inputs_are_accepted(rng):
    g = ParallelBeamGeometry(image_size=16, n_views=5)
    A = ParallelBeamProjector(g)
    x = torch.rand(1, 1, 16, 16, generator=rng)
    for dt in (torch.bfloat16, torch.float16):
        out = A(x.to(dt))
        assert out.dtype == dt
        assert torch.allclose(out.float(), A(x), rtol=2e-2, atol=2e-2)


class TestBadInput:
    g = ParallelBeamGeometry(image_size=16, n_views=5)
    A = ParallelBeamProjector(g)

    def test_wrong_rank(self):
        with pytest.raises(ValueError, match="4 dimensions"):
            self.A(torch.rand(16, 16))

    def test_wrong_shape(self):
        with pytest.raises(ValueError, match="does not match the geometry"):
            self.A(torch.rand(1, 1, 15, 16))
        with pytest.raises(ValueError, match="does not match the geometry"):
            self.A.adjoint(torch.rand(1, 1, 4, self.g.n_detectors))

    def test_integer_dtype(self):
        with pytest.raises(TypeError, match="floating-point"):
            self.A(torch.ones(1, 1, 16, 16, dtype=torch.int64))

    def test_complex_dtype(self):
        with pytest.raises(TypeError, match="real floating-point"):
            self.A(torch.ones(1, 1, 16, 16, dtype=torch.complex64))

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match="torch.Tensor"):
            self.A(np.ones((1, 1, 16, 16)))

    def test_device_mismatch(self):
        with pytest.raises(ValueError, match="image is on meta but the projector is on cpu"):
            self.A(torch.ones(1, 1, 16, 16, device="meta"))

    def test_unknown_filter(self):
        with pytest.raises(ValueError, match="unknown FBP filter"):
            fbp(torch.zeros(1, 1, *self.g.sinogram_shape), self.g, filter="butterworth")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    g = ParallelBeamGeometry(image_size=64, n_views=25)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    cpu = ParallelBeamProjector(g)
    gpu = ParallelBeamProjector(g).to("cuda")
    y = gpu(x.to("cuda", dtype))
    assert y.dtype == dtype and y.device.type == "cuda"
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert torch.allclose(y.float().cpu(), cpu(x), rtol=tol, atol=tol * 10)
    back = gpu.adjoint(y)
    assert back.shape == x.shape
    xg = x.to("cuda").requires_grad_(True)
    gpu(xg).sum().backward()
    assert torch.allclose(xg.grad.cpu(), cpu.adjoint(torch.ones(2, 1, *g.sinogram_shape)), rtol=1e-4, atol=1e-3)
