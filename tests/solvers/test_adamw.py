"""The authors' AdamW inner loop: residual decreases, stopped slices stay frozen."""
import torch

from ctresample.solvers import adamw_least_squares


def test_adamw_least_squares_decreases_and_freezes():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(20, 10, generator=g)
    v_true = torch.randn(2, 10, generator=g)
    y = (v_true @ M.T).reshape(2, 1, 4, 5)
    fwd = lambda v: (v @ M.T).reshape(-1, 1, 4, 5)
    v0 = torch.zeros(2, 10)
    r0 = (y - fwd(v0)).flatten(1).norm(dim=1)
    thr = torch.tensor([1e6, 0.0])  # slice 0 is consistent at the start already
    res = adamw_least_squares(fwd, y, v0, lr=0.05, max_iter=300, threshold=thr, weight_decay=0.0)
    assert res.iterations[0] == 0 and torch.equal(res.x[0], v0[0])
    assert res.residual_norm[1] < 0.1 * r0[1]
    assert res.iterations[1] == 300
