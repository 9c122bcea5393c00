"""The projector's sparse products by column count: torch's CSR product against ``embedding_bag``, and the TV
solve of ReSample's four frames one after another (8 columns each) against side by side (32 columns).

    python benchmarks/projector_columns.py                 # 256x256, 25 views, 2 threads
    python benchmarks/projector_columns.py --threads 1 --columns 8,16,32
    python benchmarks/projector_columns.py --quick         # 32x32 (harness check)

Everything runs in this one process on the same matrices. Part 1 times a forward plus an adjoint product of the
cached system matrix on ``N`` columns (images, sinograms) with each kernel, interleaved round by round, and prints
milliseconds per column; ``eb/csr`` < 1 means ``embedding_bag`` is faster. The projector switches to it from
``operators.projector.EMBEDDING_BAG_MIN_COLUMNS`` columns (CPU, float32). Part 2 times ReSample's consistency
solve (``tv_least_squares`` with a pull and a TV weight map, 50 iterations) of a batch of 8 slices in four frames:
one ``Framed`` operator after another (8 columns per product, CSR) against one ``FrameStack`` (32 columns,
``embedding_bag``), the ``frame_rows`` default; ``side/one`` < 1 means side by side is faster.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ctresample.methods.resample import Frame, Framed, FrameStack  # noqa: E402
from ctresample.solvers.tv import tv_least_squares  # noqa: E402
from operators import ParallelBeamGeometry, ParallelBeamProjector  # noqa: E402
from operators import projector as pj  # noqa: E402


def _eb(mat, cols):
    return F.embedding_bag(mat.col_indices(), cols, mat.crow_indices(), mode="sum",
                           per_sample_weights=mat.values(), include_last_offset=True)


def products(A: ParallelBeamProjector, columns: list[int], rounds: int) -> list[dict]:
    A(torch.zeros(1, 1, *A.domain_shape))  # build and cache both matrices
    fwd = A._matrices(torch.float32, False)[0][1]
    adj = A._matrices(torch.float32, True)[0][1]
    g = torch.Generator().manual_seed(0)
    cases = {}
    for n in columns:
        x = torch.rand(fwd.shape[1], n, generator=g)
        y = torch.rand(fwd.shape[0], n, generator=g)
        err = float((_eb(fwd, x) - fwd @ x).abs().max() / (fwd @ x).abs().max())
        cases[n] = {"csr": lambda x=x, y=y: (fwd @ x, adj @ y), "eb": lambda x=x, y=y: (_eb(fwd, x), _eb(adj, y)),
                    "err": err}
    times = {(n, k): [] for n in columns for k in ("csr", "eb")}
    for _ in range(rounds):
        for n in columns:
            for k in ("csr", "eb"):
                t0 = time.perf_counter()
                cases[n][k]()
                times[(n, k)].append((time.perf_counter() - t0) / n)
    rows = []
    for n in columns:
        csr, eb = (statistics.median(times[(n, k)]) * 1e3 for k in ("csr", "eb"))
        rows.append({"columns": n, "csr_ms_per_column": csr, "eb_ms_per_column": eb, "eb/csr": eb / csr,
                     "max_rel_difference": cases[n]["err"]})
    return rows


def frames_solve(A: ParallelBeamProjector, batch: int, iterations: int, rounds: int) -> dict:
    frames = [Frame(name) for name in Frame.NAMES]
    g = torch.Generator().manual_seed(1)
    h, w = A.domain_shape
    x = 0.02 * torch.rand(batch, 1, h, w, generator=g)
    y = A(x)
    kw = dict(mu_water=0.02, n_iterations=iterations, tol=0.0, lower=0.0, anchor_weight=0.05)
    ref = torch.rand(batch, 1, h, w, generator=g)

    def one_by_one():
        for f in frames:
            op = A if f.name == "identity" else Framed(A, f)
            tv_least_squares(op, y, 1e-3, x0=f(x), anchor=f(x), tv_weight=f(ref), **kw)

    stack = FrameStack(A, frames, batch)
    ys, xs, refs = y.repeat(len(frames), 1, 1, 1), stack.stack(x), stack.stack(ref)

    def side_by_side():
        tv_least_squares(stack, ys, 1e-3, x0=xs, anchor=xs, tv_weight=refs, **kw)

    one_by_one(), side_by_side()  # warm-up
    t_one, t_side = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        one_by_one()
        t_one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        side_by_side()
        t_side.append(time.perf_counter() - t0)
    one, side = statistics.median(t_one), statistics.median(t_side)
    return {"batch": batch, "frames": len(frames), "iterations": iterations, "one_by_one_s": one,
            "side_by_side_s": side, "side/one": side / one, "rounds": rounds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=25)
    ap.add_argument("--columns", default="1,4,8,12,16,24,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8, help="slices of the frames' TV solve")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="32x32, few rounds (checks the harness)")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.iterations = 32, 3, 5
    torch.set_num_threads(args.threads)
    geom = ParallelBeamGeometry(image_size=args.size, pixel_size=1.0, n_views=args.views)
    A = ParallelBeamProjector(geom)
    print(f"{args.size}x{args.size}, {args.views} views, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"the projector uses embedding_bag from {pj.EMBEDDING_BAG_MIN_COLUMNS} columns (CPU, float32)\n")
    print("| columns | CSR ms/column | embedding_bag ms/column | eb/csr | max rel. difference |")
    print("|---|---|---|---|---|")
    for r in products(A, [int(c) for c in args.columns.split(",")], args.rounds):
        print(f"| {r['columns']} | {r['csr_ms_per_column']:.3f} | {r['eb_ms_per_column']:.3f} | {r['eb/csr']:.2f} "
              f"| {r['max_rel_difference']:.1e} |")
    f = frames_solve(A, args.batch, args.iterations, max(3, args.rounds // 8))
    print(f"\nTV solve, {f['batch']} slices x {f['frames']} frames, {f['iterations']} iterations (median of "
          f"{f['rounds']}): one frame after another {f['one_by_one_s']:.3f} s, "
          f"side by side {f['side_by_side_s']:.3f} s, side/one {f['side/one']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
