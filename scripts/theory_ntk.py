"""The finite-width gap of the scalar-kernel closed form, against width (docs/theory.md,
kernel form).

A linearized ReLU MLP 64 → w → w → 8 (NTK parameterization, β = 0.1, centred, α = 1e-3),
on `--pairs` fixed pairs of digit views (±1-pixel shifts + N(0, 0.1²), the first digits of
scikit-learn's set). For each width and seed, the half-times (in t = η·step) of modes 1–6:

- ode: the function-space ODE with the full output-coupled eNTK (all D×D blocks), which
  is exact for the linearized network (tests/test_theory.py checks it against gradient
  descent; `--measure W` checks it here at width W);
- scalar: the closed form with the scalar eNTK K = mean_a Θ_aa and cₖ(0) from the run's Z₀;
- limit: the closed form with the analytic infinite-width NTK (relu_ntk), cₖ(0) its
  expectation γₖα²(D − k + 1);
- scalar_ode: the function-space ODE with the scalar eNTK K ⊗ I (checks the closed form
  itself against the flow it solves);
- split: the closed form with γₖ replaced by the largest eigenvalue of the k-th group of D
  eigenvalues of the full operator Θ^{1/2}(P ⊗ I)Θ^{1/2}/(2N) (the output-coupled blocks
  split the D copies of each mode; the fastest copy is learned).

    python scripts/theory_ntk.py --widths 512 1024 2048 4096 --seeds 0 1 2 --pairs 64
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from sslkit.augment import ShiftNoise  # noqa: E402
from sslkit.data import digits  # noqa: E402
from sslkit.models import build_backbone  # noqa: E402
from sslkit.theory import relu_ntk  # noqa: E402
from sslkit.theory import stepwise as S  # noqa: E402
from sslkit.theory.kernels import dense_ntk  # noqa: E402
from sslkit.theory.pairs import train_pairs  # noqa: E402

ALPHA, OUT_DIM, MODES, BIAS = 1e-3, 8, 6, 0.1


def fixed_pairs(n: int) -> torch.Tensor:
    v1, v2 = ShiftNoise(1, 0.1, 0.3053)(digits(n).x[:n], torch.Generator().manual_seed(0))
    return torch.cat([v1, v2]).double()


def split_rates(theta: torch.Tensor) -> torch.Tensor:
    """The largest eigenvalue of each group of D of the full output-coupled operator."""
    n2, d = theta.shape[0], theta.shape[2]
    full = theta.permute(0, 2, 1, 3).reshape(n2 * d, n2 * d)
    root = S._sqrt_psd(full)
    swap = torch.kron(S.swap(n2 // 2), torch.eye(d, dtype=torch.float64))
    values = torch.linalg.eigvalsh(root @ swap @ root / n2).flip(0)
    return values[: MODES * d].reshape(MODES, d)[:, 0]


def one(width: int, seed: int, views: torch.Tensor, measure: bool) -> dict:
    torch.manual_seed(seed)
    net = build_backbone("sslkit.models.MLP", (1, 8, 8), linearized=True, center=True,
                         offset_scale=ALPHA, width=width, depth=2, out_dim=OUT_DIM,
                         parameterization="ntk", bias_scale=BIAS).double()
    theta = dense_ntk(net.network, views)
    with torch.no_grad():
        z0 = net(views)
    scalar = theta.diagonal(dim1=2, dim2=3).mean(-1)
    gamma, u = S.kernel_modes(scalar)
    c0 = S.initial_levels(gamma, S.kernel_amplitudes(z0, scalar, u))
    t_scalar = S.half_times(gamma, c0)[:MODES]
    t_split = S.half_times(split_rates(theta), c0[:MODES])
    t = torch.linspace(0, 1.3 * float(t_scalar.max()), 3000, dtype=torch.float64)
    ode = S.integrate_outputs(z0, theta, t)
    t_ode = S.crossing_times(t.numpy(), ode.numpy())[:MODES]
    scalar_ode = S.integrate_outputs(z0, scalar[:, :, None, None] * torch.eye(OUT_DIM, dtype=torch.float64), t)
    row = {"width": width, "seed": seed, "gamma": gamma[:MODES].tolist(), "ode": t_ode.tolist(),
           "scalar": t_scalar.tolist(), "split": t_split.tolist(),
           "scalar_ode": S.crossing_times(t.numpy(), scalar_ode.numpy())[:MODES].tolist(),
           "offdiag_norm": float(theta.diagonal(dim1=2, dim2=3).norm() and
                                 (theta.norm() ** 2 - theta.diagonal(dim1=2, dim2=3).norm() ** 2).sqrt() / theta.norm())}
    if measure:
        lr = 0.005 / float(gamma[0])
        steps = int(1.2 * t_ode[-1] / lr)
        measured, _ = train_pairs(net, views, lr, steps)
        row["measured"] = (S.crossing_times(np.arange(steps + 1.0), measured.numpy())[:MODES] * lr).tolist()
    return row


def limit(views: torch.Tensor) -> list[float]:
    flat = views.flatten(1)
    k = relu_ntk(flat, flat, depth=2, bias_scale=BIAS)
    gamma, _ = S.kernel_modes(k)
    return S.half_times(gamma, S.expected_levels(gamma, ALPHA, 1, OUT_DIM))[:MODES].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--measure", type=int, nargs="*", default=[], help="widths also trained by GD")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures" / "theory_ntk_width")
    args = parser.parse_args()
    views = fixed_pairs(args.pairs)
    rows = [one(w, s, views, w in args.measure) for w in args.widths for s in args.seeds]
    result = {"pairs": args.pairs, "limit": limit(views), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    for r in rows:
        ratio = np.array(r["scalar"]) / np.array(r["ode"])
        print(f"w={r['width']:5d} seed={r['seed']} scalar/ode {np.round(ratio, 3)} "
              f"split/ode {np.round(np.array(r['split']) / np.array(r['ode']), 3)} "
              f"limit/ode {np.round(np.array(result['limit']) / np.array(r['ode']), 3)} "
              f"scalar/scalar_ode {np.round(np.array(r['scalar']) / np.array(r['scalar_ode']), 3)} "
              f"offdiag {r['offdiag_norm']:.3f}"
              + (f" measured/ode {np.round(np.array(r['measured']) / np.array(r['ode']), 4)}" if "measured" in r else ""))
    figure(result, args.out)


def figure(result: dict, out: Path) -> None:
    rows = result["rows"]
    widths = sorted({r["width"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, MODES))
    for k in range(MODES):
        for ax, key in zip(axes, ("scalar", "limit")):
            ratios = [[(r[key][k] if key == "scalar" else result["limit"][k]) / r["ode"][k]
                       for r in rows if r["width"] == w] for w in widths]
            mean = [np.mean(x) for x in ratios]
            ax.errorbar(widths, mean, yerr=[np.ptp(x) / 2 for x in ratios], color=colors[k],
                        marker="o", ms=3, capsize=2, label=f"mode {k + 1}")
    for ax, title in zip(axes, ("closed form, scalar eNTK", "closed form, infinite-width NTK")):
        ax.axhline(1, color="grey", lw=0.5)
        ax.set(xscale="log", xlabel="width", ylabel="half-time / full-eNTK ODE half-time",
               title=f"{title} ({result['pairs']} digit pairs)")
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xticks([], minor=True)
        ax.legend(fontsize=7)
    fig.savefig(out.with_suffix(".png"), dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
