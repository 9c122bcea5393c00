"""The buffered ``gradient`` / ``divergence`` of the TV solver: the padded formulas' values; differentiable."""
import pytest
import torch

from ctresample.solvers.tv import divergence, gradient

F = torch.nn.functional


def _gradient_padded(u, z_weight=0.0):
    parts = [F.pad(u.diff(dim=-2), (0, 0, 0, 1)), F.pad(u.diff(dim=-1), (0, 1))]
    if z_weight > 0:
        parts.append(F.pad(z_weight * u.diff(dim=0), (0, 0, 0, 0, 0, 0, 0, 1)))
    return torch.cat(parts, dim=1)


def _divergence_padded(g, z_weight=0.0):
    gr, gc = g[:, 0:1, :-1, :], g[:, 1:2, :, :-1]
    d = F.pad(gr, (0, 0, 0, 1)) - F.pad(gr, (0, 0, 1, 0)) + F.pad(gc, (0, 1)) - F.pad(gc, (1, 0))
    if z_weight > 0 and g.shape[1] > 2:
        gz = z_weight * g[:-1, 2:3]
        d = d + F.pad(gz, (0, 0, 0, 0, 0, 0, 0, 1)) - F.pad(gz, (0, 0, 0, 0, 0, 0, 1, 0))
    return d


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("z_weight", [0.0, 0.7])
def test_same_values_as_the_padded_formulas(dtype, z_weight):
    g = torch.Generator().manual_seed(0)
    u = torch.randn((3, 1, 17, 12), generator=g, dtype=dtype)
    q = torch.randn((3, 3 if z_weight else 2, 17, 12), generator=g, dtype=dtype)
    assert torch.equal(gradient(u, z_weight), _gradient_padded(u, z_weight))
    assert torch.equal(divergence(q, z_weight), _divergence_padded(q, z_weight))


def test_differentiable():
    g = torch.Generator().manual_seed(1)
    u = torch.randn((2, 1, 5, 4), generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn((2, 3, 5, 4), generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gradient(t, 0.5), (u,))
    assert torch.autograd.gradcheck(lambda t: divergence(t, 0.5), (q,))
    # with autograd the differences are assigned; without, written straight into the buffer: the same values
    with torch.no_grad():
        assert torch.equal(gradient(u, 0.5), gradient(u.detach(), 0.5))
    assert torch.equal(gradient(u, 0.5).detach(), gradient(u.detach(), 0.5)) and gradient(u).requires_grad


@pytest.mark.parametrize("z_weight", [0.0, 0.7])
def test_batch_last_layout_keeps_the_values_and_the_layout(z_weight):
    """The solver runs its images with the batch innermost in memory (``batch_last``, so the projector's sparse
    products need no transposed copies): the same values, and ``gradient`` / ``divergence`` keep that layout."""
    from ctresample.solvers.tv import batch_last

    g = torch.Generator().manual_seed(1)
    u = torch.randn((4, 1, 9, 11), generator=g)
    q = torch.randn((4, 3 if z_weight else 2, 9, 11), generator=g)
    ub, qb = batch_last(u), batch_last(q)
    assert torch.equal(ub, u) and ub.stride(0) == 1 and not ub.is_contiguous()
    assert batch_last(ub) is ub and batch_last(u[:1]) is not None
    gb, db = gradient(ub, z_weight), divergence(qb, z_weight)
    assert torch.equal(gb, gradient(u, z_weight)) and torch.equal(db, divergence(q, z_weight))
    assert gb.stride(0) == 1 and db.stride(0) == 1
