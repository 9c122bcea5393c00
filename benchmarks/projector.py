"""Projector benchmark: ours vs astra-toolbox CPU (`linear`) vs skimage.transform.radon.

    python benchmarks/projector.py               # 256x256, 25 and 180 views, batch 1 and 8
    python benchmarks/projector.py --clinical    # also 512x512 x 1000 views: peak memory of ours
    python benchmarks/projector.py --device cuda # ours on CUDA (astra/skimage stay on CPU)

All methods run in this one process on the same inputs. Times are medians of repeated runs
(s); memory is the peak extra resident memory during the call (MiB, CPU) or the peak CUDA
allocation. ``ours/astra`` < 1 means ours is faster. astra is looped over the batch (its 2D
CPU projector takes one slice); skimage's radon has no adjoint matched to it
(``iradon`` with ``filter_name=None`` is used as its backprojection).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_mb, peak_memory, timeit  # noqa: E402

from operators import ParallelBeamGeometry, ParallelBeamProjector  # noqa: E402


def astra_ops(g: ParallelBeamGeometry):
    import astra

    h, w = g.image_shape
    ps = g.pixel_size
    vg = astra.create_vol_geom(h, w, -w / 2 * ps, w / 2 * ps, -h / 2 * ps, h / 2 * ps)
    pg = astra.create_proj_geom("parallel", g.detector_spacing, g.n_detectors, g.view_angles())
    pid = astra.create_projector("linear", pg, vg)

    def fwd(batch):
        out = []
        for im in batch:
            sid, s = astra.create_sino(im, pid)
            astra.data2d.delete(sid)
            out.append(s)
        return out

    def adj(batch):
        out = []
        for s in batch:
            bid, b = astra.create_backprojection(s, pid)
            astra.data2d.delete(bid)
            out.append(b)
        return out

    return fwd, adj


def skimage_ops(g: ParallelBeamGeometry):
    from skimage.transform import iradon, radon

    theta = np.degrees(g.view_angles())

    def fwd(batch):
        return [radon(im, theta=theta, circle=False) for im in batch]

    def adj(batch):
        return [iradon(s, theta=theta, filter_name=None, circle=False) for s in batch]

    return fwd, adj


def measure(fn, device="cpu", repeat=5):
    t = timeit(fn, repeat=repeat, device=device)
    with peak_memory(device) as mem:
        fn()
    return t, mem["peak"]


def run_grid(device: str, repeat: int) -> list[dict]:
    rows = []
    for views in (25, 180):
        g = ParallelBeamGeometry(image_size=256, pixel_size=1.0, n_views=views)
        A = ParallelBeamProjector(g).to(device)
        a_fwd, a_adj = astra_ops(g)
        s_fwd, s_adj = skimage_ops(g)
        # build our (cached) system matrices outside the timed region, as a reused operator would
        A(torch.zeros(1, 1, 256, 256, device=device))
        A.adjoint(torch.zeros(1, 1, *g.sinogram_shape, device=device))
        print(f"{views} views: ours holds {fmt_mb(A.cached_bytes())} MiB of cached system matrices (A and A^T), "
              "built once per geometry; not counted in the per-call peaks below")
        for batch in (1, 8):
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(batch, 1, 256, 256, generator=gen).to(device)
            y = A(x).detach()
            xs = [im for im in x[:, 0].cpu().numpy()]
            ys_astra = [s for s in y[:, 0].cpu().numpy()]
            xg = x.clone().requires_grad_(True)

            def fwd_bwd():
                xg.grad = None
                A(xg).square().sum().backward()

            res = {}
            res["ours_fwd"] = measure(lambda: A(x), device, repeat)
            res["ours_adj"] = measure(lambda: A.adjoint(y), device, repeat)
            res["ours_fb"] = measure(fwd_bwd, device, repeat)
            res["astra_fwd"] = measure(lambda: a_fwd(xs), "cpu", repeat)
            res["astra_adj"] = measure(lambda: a_adj(ys_astra), "cpu", repeat)
            res["skimage_fwd"] = measure(lambda: s_fwd(xs), "cpu", max(1, repeat // 2))
            ys_sk = s_fwd(xs)
            res["skimage_adj"] = measure(lambda: s_adj(ys_sk), "cpu", max(1, repeat // 2))
            rows.append({"views": views, "batch": batch, **res})
    return rows


def print_table(rows: list[dict], device: str) -> None:
    print(f"\n256x256, ours on {device}; time in ms (median), peak extra memory in MiB\n")
    hdr = (
        "| views | batch | op | ours ms | astra ms | skimage ms | ours/astra time | ours MiB | astra MiB | "
        "skimage MiB |"
    )
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for r in rows:
        for op, label in (("fwd", "forward"), ("adj", "adjoint")):
            o, a, s = r[f"ours_{op}"], r[f"astra_{op}"], r[f"skimage_{op}"]
            print(
                f"| {r['views']} | {r['batch']} | {label} | {o[0]*1e3:.2f} | {a[0]*1e3:.2f} | {s[0]*1e3:.1f} | "
                f"{o[0]/a[0]:.3f} | {fmt_mb(o[1])} | {fmt_mb(a[1])} | {fmt_mb(s[1])} |"
            )
        fb = r["ours_fb"]
        ab = r["astra_fwd"][0] + r["astra_adj"][0]
        print(
            f"| {r['views']} | {r['batch']} | fwd+bwd | {fb[0]*1e3:.2f} | {ab*1e3:.2f} (fwd+adj) | - | "
            f"{fb[0]/ab:.3f} | {fmt_mb(fb[1])} | - | - |"
        )
    print("\nTarget: batch 8 ours/astra <= 0.333 (3x faster) for forward and adjoint; batch 1 <= 1.")
    ok = all(
        r[f"ours_{op}"][0] / r[f"astra_{op}"][0] <= (1 / 3 if r["batch"] == 8 else 1.0)
        for r in rows
        for op in ("fwd", "adj")
    )
    print("TARGET MET" if ok else "TARGET MISSED")


def clinical(device: str) -> None:
    g = ParallelBeamGeometry(image_size=512, pixel_size=0.7, n_views=1000)
    A = ParallelBeamProjector(g).to(device)
    x = torch.rand(1, 1, 512, 512, device=device)
    with peak_memory(device) as m_fwd:
        y = A(x)
    with peak_memory(device) as m_adj:
        A.adjoint(y)
    tf = timeit(lambda: A(x), repeat=1, warmup=0, device=device)
    print(
        f"\n512x512, 1000 views, {g.n_detectors} bins, on {device}: forward peak {fmt_mb(m_fwd['peak'])} MiB "
        f"({tf:.1f} s), adjoint peak {fmt_mb(m_adj['peak'])} MiB; limit 4096 MiB: "
        + ("OK" if max(m_fwd["peak"], m_adj["peak"]) < 4 * 2**30 else "OVER")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--clinical", action="store_true", help="also measure 512x512 x 1000 views")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (astra's CPU projector uses one)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print_table(run_grid(args.device, args.repeat), args.device)
    if args.clinical:
        clinical(args.device)


if __name__ == "__main__":
    main()
