"""One adjointness and gradient suite, applied to every linear operator (ODL / deepinv style).

``OPERATORS`` lists each operator once (the projector on several geometries, uncached, and its
transpose ``A.T``); every test below runs on all of them. An operator is anything with
``op(x)``, ``op.adjoint(y)``, ``op.domain_shape`` and ``op.range_shape`` on ``(B, C, *shape)``
tensors; add new ones (e.g. finite differences of a TV solver) to ``OPERATORS``.
"""
from __future__ import annotations

import math

import pytest
import torch

from operators import ParallelBeamGeometry, ParallelBeamProjector

GEOMETRIES = {
    "even-16-few-views": dict(image_size=16, n_views=5),
    "odd-15-many-views": dict(image_size=15, n_views=40, pixel_size=0.7),
    "rectangular": dict(image_size=(12, 20), n_views=9),
    "detector-narrower": dict(image_size=17, n_views=7, n_detectors=9),
    "detector-wider-fine": dict(image_size=10, n_views=6, n_detectors=40, detector_spacing=0.5),
    "explicit-angles": dict(image_size=11, angles=[0.0, 0.3, math.pi / 4, 2.0, 3 * math.pi / 4, 5.5]),
}


def _projector(kw, **extra):
    return lambda: ParallelBeamProjector(ParallelBeamGeometry(**kw), **extra)


#: name -> factory of a linear operator
OPERATORS = {f"projector[{name}]": _projector(kw) for name, kw in GEOMETRIES.items()}
OPERATORS["projector-uncached[even-16]"] = _projector(GEOMETRIES["even-16-few-views"], cache_nnz=0)
for _name in ("rectangular", "explicit-angles"):
    OPERATORS[f"projector.T[{_name}]"] = (lambda kw: lambda: ParallelBeamProjector(ParallelBeamGeometry(**kw)).T)(
        GEOMETRIES[_name])
#: small enough for gradcheck and for building the dense matrix
TINY = [n for n in OPERATORS if any(k in n for k in ("even-16", "rectangular", "explicit-angles", "detector-wider"))]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def _rand(op_shape, gen, batch=(3, 2), requires_grad=False):
    return torch.rand(*batch, *op_shape, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)


@pytest.mark.parametrize("name", OPERATORS)
def test_shapes(name, gen):
    op = OPERATORS[name]()
    x = _rand(op.domain_shape, gen)
    assert op(x).shape == (3, 2, *op.range_shape)
    assert op.adjoint(op(x)).shape == x.shape


@pytest.mark.parametrize("name", OPERATORS)
def test_dot_product_adjoint(name, gen):
    """``<A x, y> = <x, A^T y>`` relative to ``||A x|| ||y||`` (ODL's diagnostics)."""
    op = OPERATORS[name]()
    x, y = _rand(op.domain_shape, gen), _rand(op.range_shape, gen)
    lhs = (op(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert abs(lhs - rhs) / (op(x).norm() * y.norm()) < 1e-12
    assert torch.allclose(op.T(y), op.adjoint(y))


@pytest.mark.parametrize("name", OPERATORS)
def test_linear(name, gen):
    op = OPERATORS[name]()
    x1, x2 = _rand(op.domain_shape, gen), _rand(op.domain_shape, gen)
    torch.testing.assert_close(op(2.5 * x1 - x2), 2.5 * op(x1) - op(x2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", OPERATORS)
def test_autograd_gradient_is_the_adjoint(name, gen):
    op = OPERATORS[name]()
    x = _rand(op.domain_shape, gen, batch=(2, 1), requires_grad=True)
    w = _rand(op.range_shape, gen, batch=(2, 1))
    (op(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, op.adjoint(w), rtol=1e-12, atol=1e-12)
    y = w.clone().requires_grad_(True)
    v = _rand(op.domain_shape, gen, batch=(2, 1))
    (op.adjoint(y) * v).sum().backward()  # and the adjoint's gradient is the forward
    torch.testing.assert_close(y.grad, op(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", TINY)
def test_gradcheck_float64(name, gen):
    op = OPERATORS[name]()
    x = _rand(op.domain_shape, gen, batch=(1, 1), requires_grad=True)
    y = _rand(op.range_shape, gen, batch=(1, 1), requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradcheck(op.adjoint, (y,))
    assert torch.autograd.gradgradcheck(op, (x,))


@pytest.mark.parametrize("name", TINY)
def test_adjoint_is_the_transpose_of_the_dense_matrix(name):
    op = OPERATORS[name]()
    n = math.prod(op.domain_shape)
    M = op(torch.eye(n, dtype=torch.float64).reshape(n, 1, *op.domain_shape)).reshape(n, -1).T  # (m, n)
    m = M.shape[0]
    Mt = op.adjoint(torch.eye(m, dtype=torch.float64).reshape(m, 1, *op.range_shape)).reshape(m, -1)
    torch.testing.assert_close(M, Mt, rtol=1e-12, atol=1e-12)
