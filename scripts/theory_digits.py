"""The final embedding of a linearized network on digits against the dynamics' prediction
and Kiani et al.'s optima (docs/theory.md, "The final embedding on digits").

A linearized ReLU MLP 64 → w → w → D (NTK parameterization, β = 0.1, centred, α = 1e-10)
is trained by full-batch gradient descent (η = `--eta`/γ₁) on the simplified Barlow
Twins loss over `--pairs` fixed pairs of views of the first digits (±1-pixel shifts and
N(0, 0.1²) noise) until ‖C − I‖²_F ≤ 1e-12. The held-out digits are sslkit's held-out
split, the last 297 images, clean (no shift, no noise). The training runs in output space
(`sslkit.theory.pairs.train_outputs`: the network's own iterates, computed with its full
eNTK); `--network W` also trains the module itself at width W and prints the largest
difference between the two. Per width and seed it prints:

- dyn: the mean cosine of the principal angles between the trained embedding and the
  dynamics' prediction (`stepwise.final_embedding`, top-D modes of the scalar eNTK
  K = mean_a Θ_aa), on the 2N training views and on the held-out digits;
- limit: the same prediction with the analytic infinite-width NTK;
- kiani: the same measure for Kiani et al.'s contrastive and non-contrastive optima
  (`induced.py`, with K; for view pairs both span one subspace) and, in the last column
  of that group, their cosine with the dynamics' prediction;
- gap γ_{D+1}/γ_D of the scalar eNTK, ε = ‖Θ − K ⊗ I‖/‖Θ‖ (views × views), their
  Davis–Kahan-type ratio ε/(1 − γ_{D+1}/γ_D) (`stepwise.widest_gap`; a proxy for how far
  the coupling can turn the top-D subspace, not a bound: ε is a Frobenius norm relative to
  ‖Θ‖), DK: the Davis–Kahan ratio of the coupling itself (`davis_kahan`), the sin θ
  theorem's bound b on the angle between the full operator's top eigenspace and the
  prediction's, √(1 − b²) (the least principal cosine that bound allows) and that
  operator's largest sin itself (sinM ≤ b), the trained outputs' own sine in the
  operator's coordinates (sinY, `mode_shares`; ≤ b if they lie in that eigenspace), and the last (smallest) principal cosine on
  the views and on the held-out digits;
- kernel: the relative Frobenius error on the held-out digits of the induced kernel of the
  trained outputs on the views against the trained embedding's kernel f(x)ᵀf(x'), with the
  full eNTK (`coupled_representation`; exact up to the init scale) and with the scalar eNTK
  (Kiani et al.'s formula, off by the finite-width coupling ε);
- inv: the trained embedding's invariance gap ‖Z1 − Z2‖²/(‖Z1‖² + ‖Z2‖²) (Kiani's optima: 0);
- race (D = 2): mode 2's relative lead in the race for the second output direction,
  read off the linear phase from the actual initialisation (`stepwise.race_margin`,
  computed before training; the well-posed runs with a lead below ≈ 0.22 miss the bar,
  those above 0.25 meet it, docs/benchmarks.md);
- D+2: the mean cosine between the trained span and the top D + 2 predicted modes (1 iff
  it lies within them); K⊗I: the same descent with Θ replaced by K ⊗ I against the
  prediction; copies: how far the cross-output blocks split the D copies of modes
  D − 1 … D + 2 (`copies`).

`--out-dim gap` chooses D per run before training: the D in `--gap-range` (4 … 10) whose
network's scalar eNTK at initialisation has the smallest γ_{D+1}/γ_D
(`stepwise.widest_gap`). `--pairs auto` chooses the problem size per run before
training, so that the prediction is determined by the operator: the largest N in
`--pair-choices` whose network at init (D from `--out-dim`, capped at 2N − 2 for `gap`)
has a sin θ bound ≤ `--max-bound` (`well_posed_size`; 0.312 = √(1 − 0.95²), so the
operator's top eigenspace has every principal cosine ≥ 0.95 with the prediction); runs
where no N qualifies are listed, not trained. With `--min-race-margin R` (D = 2) an N
qualifies only if also mode 2's lead at init (`stepwise.race_margin`) is ≥ R: the
operator bound has no initial values in it, and the race after the first mode depends
on them. `--coupling λ …` also trains each run with the cross-output
coupling scaled by λ, Θ_λ = K ⊗ I + λ(Θ − K ⊗ I) (λ = 0 is the K⊗I control, λ = 1 the
network), and prints per λ the mean and the last cosine, the bound, sinM and sinY of
Θ_λ, and how ‖y‖² splits over the scalar modes (`mode_shares`). `--negate-last-output`
starts every run from its last output's initial values negated: the loss and the K ⊗ I
descent do not see that, the full eNTK does. The JSON goes to `--out`, and a
chart of the last principal cosine against ε/(1 − γ_{D+1}/γ_D) beside it (.png), with the
rows of the `--compare` JSON files drawn too.

    python scripts/theory_digits.py --widths 512 1024 2048 4096 --seeds 0 1 2
    python scripts/theory_digits.py --out-dim gap --out scripts/figures/theory_digits_gap.json \
        --compare scripts/figures/theory_digits.json
    python scripts/theory_digits.py --pairs auto --out-dim gap --gap-range 2 6 \
        --out scripts/figures/theory_digits_wellposed.json
    python scripts/theory_digits.py --widths 4096 --seeds 1 --coupling 0 0.25 0.5 0.75 1 \
        --out /tmp/theory_digits_coupling.json
    python scripts/theory_digits.py --pairs auto --out-dim gap --gap-range 2 6 --negate-last-output \
        --out /tmp/theory_digits_wellposed_negated.json
    python scripts/theory_digits.py --pairs auto --out-dim gap --gap-range 2 6 --min-race-margin 0.25 \
        --out scripts/figures/theory_digits_wellposed_race.json --compare scripts/figures/theory_digits_wellposed.json
"""

import argparse
import json
import math
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sslkit.augment import ShiftNoise  # noqa: E402
from sslkit.data import digits  # noqa: E402
from sslkit.data.sources import HELD_OUT  # noqa: E402
from sslkit.models import build_backbone  # noqa: E402
from sslkit.theory import relu_ntk  # noqa: E402
from sslkit.theory import stepwise as S  # noqa: E402
from sslkit.theory.induced import (contrastive_optimum, coupled_representation, induced_kernel,  # noqa: E402
                                   noncontrastive_optimum, representation)
from sslkit.theory.kernels import dense_ntk, scalar_part  # noqa: E402
from sslkit.theory.pairs import train_outputs, train_pairs  # noqa: E402

BIAS, TOL = 0.1, 1e-12


def data(pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The stacked fixed views [views 1; views 2] of the first `pairs` digits, and the
    clean held-out digits."""
    augment = ShiftNoise(1, 0.1, 0.3053)
    x = digits(1).x
    v1, v2 = augment(x[:pairs], torch.Generator().manual_seed(0))
    return torch.cat([v1, v2]).double(), augment.clean(x[-HELD_OUT:]).double()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def mean_cosine(f: torch.Tensor, g: torch.Tensor) -> float:
    return float(S.principal_cosines(f, g).mean())


def copies(theta: torch.Tensor, k: torch.Tensor, modes: range) -> list[tuple[float, float]]:
    """The D copies of each scalar mode in the full output-coupled operator
    Θ^{1/2}(P ⊗ I)Θ^{1/2}/(2N): each of its top eigenvectors (2N, D) is assigned to the
    scalar mode uₖ it overlaps most (‖uₖᵀ W‖); returns, per mode in `modes`, the smallest
    and largest eigenvalue assigned to it, relative to γₖ (1, 1 for Θ = K ⊗ I)."""
    n2, d = theta.shape[0], theta.shape[2]
    gamma, u = S.kernel_modes(k)
    root = S._sqrt_psd(torch.from_numpy(S.output_matrix(theta, n2, d)))
    swap = torch.kron(S.swap(n2 // 2), torch.eye(d, dtype=torch.float64))
    values, vectors = torch.linalg.eigh(root @ swap @ root / n2)
    top = 2 * d * modes.stop
    values, vectors = values.flip(0)[:top], vectors.flip(1)[:, :top].reshape(n2, d, top)
    owner = torch.einsum("nk,ndi->kdi", u[:, : 2 * modes.stop], vectors).pow(2).sum(1).argmax(0)
    return [(float(values[owner == m].min() / gamma[m]), float(values[owner == m].max() / gamma[m]))
            for m in modes]


def davis_kahan(theta: torch.Tensor, k: torch.Tensor) -> dict[str, float]:
    """Davis–Kahan for the finite-width coupling at D = Θ's output count. The full operator
    M = Θ^{1/2}(P ⊗ I)Θ^{1/2}/(2N) is the scalar one M₀ = K^{1/2}PK^{1/2}/(2N) ⊗ I plus
    E = M − M₀ ⊗ I; Π projects onto the D copies of the top-D scalar modes, U_D ⊗ I (M₀'s
    top eigenspace, the span that the prediction gives every output). `stepwise.sin_theta`
    gives ‖(1 − Π)EΠ‖₂, the separation δ and the largest sin of the angle between M's top
    D² eigenspace and U_D ⊗ I. Returns

    - dk: ‖(1 − Π)EΠ‖₂/(γ_D − γ_{D+1}), the ratio with the scalar gap (‖sin Θ‖ ≲ dk up to
      a constant);
    - bound: ‖(1 − Π)EΠ‖₂/δ, the sin θ theorem's own bound (∞ if δ ≤ 0), so
      √(1 − bound²) is a lower bound on every principal cosine of M's top eigenspace;
    - sin: that largest sin itself (≤ bound).

    The descent from a small init need not end in M's top eigenspace: the bound is on the
    operator, and whether the trained span follows it is what the runs test."""
    n2, d = theta.shape[0], theta.shape[2]
    gamma, u = S.kernel_modes(k)
    eye = torch.eye(d, dtype=torch.float64)
    swap = torch.kron(S.swap(n2 // 2), eye)
    root = S._sqrt_psd(torch.from_numpy(S.output_matrix(theta, n2, d)))
    residual, separation, sin = S.sin_theta(root @ swap @ root / n2, torch.kron(u[:, :d].contiguous(), eye))
    return {"dk": residual / float(gamma[d - 1] - gamma[d]),
            "bound": residual / separation if separation > 0 else math.inf, "sin": sin}


def linearized(width: int, seed: int, out_dim: int, alpha: float):
    torch.manual_seed(seed)
    return build_backbone("sslkit.models.MLP", (1, 8, 8), linearized=True, center=True,
                          offset_scale=alpha, width=width, depth=2, out_dim=out_dim,
                          parameterization="ntk", bias_scale=BIAS).double()


def initial_outputs(net, x: torch.Tensor, negate: bool = False) -> torch.Tensor:
    """The network's outputs on x at initialisation; with `negate`, the last output's
    negated (`--negate-last-output`)."""
    with torch.no_grad():
        z = net(x)
    return torch.cat([z[:, :-1], -z[:, -1:]], 1) if negate else z


def mode_shares(theta: torch.Tensor, k: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """How the trained outputs in the operator's coordinates, y = Θ^{+1/2} vec Z (2N, D),
    split over the scalar modes: ‖uₖᵀy‖²/‖y‖² for each k (summing to 1). The prediction
    has y ∈ U_D ⊗ I (for Θ = K ⊗ I, y = U_D γ^{-1/2} R), so the sine of y's angle to
    U_D ⊗ I is sin Y = √(1 − Σ_{k ≤ D} share_k); a y in M's top D² eigenspace has
    sin Y ≤ `davis_kahan`'s bound, and a larger one means that the descent did not end
    there."""
    n2, d = z.shape
    y = S._sqrt_psd(torch.from_numpy(S.output_matrix(theta, n2, d)), inverse=True) @ z.flatten()
    share = (S.kernel_modes(k)[1].T @ y.reshape(n2, d)).pow(2).sum(1)
    return share / share.sum()


def sin_y(shares: torch.Tensor, d: int) -> float:
    return float((1 - shares[:d].sum()).clamp(min=0).sqrt())


def gap_dim(width: int, seed: int, dims: range, alpha: float, views: torch.Tensor) -> int:
    """The D in `dims` whose network (this width and seed, D outputs) has the widest gap in
    its scalar eNTK's spectrum at initialisation (`stepwise.widest_gap`)."""
    return S.widest_gap(lambda d: S.kernel_modes(scalar_part(dense_ntk(
        linearized(width, seed, d, alpha).network, views))[0])[0], dims)


def well_posed_size(width: int, seed: int, pairs: list[int], out_dim: int | range, alpha: float,
                    max_bound: float, min_race: float = 0.0, eta: float = 0.1,
                    negate: bool = False) -> tuple[int, int] | None:
    """`--pairs auto`: the largest N in `pairs` whose problem is well-posed at
    initialisation (`stepwise.well_posed`): D = `out_dim`, or its widest gap (`gap_dim`,
    capped at 2N − 2), and the sin θ bound of `davis_kahan` for that network ≤ `max_bound`;
    with `min_race` > 0 and D = 2 also mode 2's lead in the race for the second output
    direction (`stepwise.race_margin` from the network's own initial outputs, ηγ₁ = `eta`)
    ≥ `min_race` (`negate`: from the start `one` uses with it). Returns (N, D), or None if
    no N qualifies. Only the networks at init are used."""
    dims = {}

    def bound(n: int) -> float:
        views = data(n)[0]
        d = out_dim if isinstance(out_dim, int) else gap_dim(
            width, seed, range(out_dim.start, min(out_dim.stop, 2 * n - 1)), alpha, views)
        dims[n] = d
        net = linearized(width, seed, d, alpha)
        theta = dense_ntk(net.network, views)
        k = scalar_part(theta)[0]
        if min_race > 0 and d == 2:
            lr = eta / float(S.kernel_modes(k)[0][0])
            if S.race_margin(theta, initial_outputs(net, views, negate), k, lr)["margin"] < min_race:
                return math.inf
        return davis_kahan(theta, k)["bound"]

    n = S.well_posed(pairs, bound, max_bound)
    return None if n is None else (n, dims[n])


def one(width: int, seed: int, out_dim: int | range, eta: float, alpha: float, views: torch.Tensor,
        held: torch.Tensor, network: bool, couplings: list[float], negate: bool = False) -> dict:
    """One run; `out_dim` a range: D chosen in it by `gap_dim`. For each λ in `couplings`,
    the same descent with Θ_λ = K ⊗ I + λ(Θ − K ⊗ I): the gap held fixed, the coupling
    scaled, so the Davis–Kahan ratio is λε/(1 − γ_{D+1}/γ_D). `negate`: the last output's
    initial values negated, on the views and the held-out digits (a symmetry of the loss
    and of the K ⊗ I descent, not of the full eNTK's)."""
    if isinstance(out_dim, range):
        out_dim = gap_dim(width, seed, out_dim, alpha, views)
    net = linearized(width, seed, out_dim, alpha)
    theta, theta_held = dense_ntk(net.network, views), dense_ntk(net.network, held, views)
    k, eps = scalar_part(theta)
    k_held = scalar_part(theta_held)[0].T  # k_X of the held-out digits, (2N, 297)
    gamma, u = S.kernel_modes(k)
    lr = eta / float(gamma[0])
    z0, f0 = initial_outputs(net, views, negate), initial_outputs(net, held, negate)
    z, f, steps = train_outputs(z0, theta, lr, 100_000, TOL, f0, theta_held)
    dk = davis_kahan(theta, k)
    race = S.race_margin(theta, z0, k, lr)["margin"] if out_dim == 2 else None
    row = {"width": width, "seed": seed, "pairs": len(views) // 2, "out_dim": out_dim, "negated": negate,
           "race_margin": race, "steps": steps,
           "copies": copies(theta, k, range(out_dim - 2, out_dim + 2)), "gap": float(gamma[out_dim] / gamma[out_dim - 1]),
           "eps": eps, "davis_kahan": dk["dk"], "dk_bound": dk["bound"], "dk_sin": dk["sin"],
           "gamma": (gamma[: out_dim + 2] / gamma[0]).tolist()}
    if network:
        _, f_net = train_pairs(net, views, lr, steps, new=held)
        with torch.no_grad():
            row["network_vs_outputs"] = max(relative(net(views), z), relative(f_net, f))

    pred = [S.final_embedding(k, u[:, :out_dim], gamma[:out_dim], kx) for kx in (k, k_held)]
    row["dyn"] = [mean_cosine(z, pred[0]), mean_cosine(f, pred[1])]
    row["whitened_sin"] = sin_y(mode_shares(theta, k, z), out_dim)
    row["dyn_cosines"] = [S.principal_cosines(z, pred[0]).tolist(), S.principal_cosines(f, pred[1]).tolist()]
    eye = torch.eye(out_dim, dtype=torch.float64)
    scalar, scalar_held = k[:, :, None, None] * eye, k_held.T[:, :, None, None] * eye
    zs, fs, _ = train_outputs(z0, scalar, lr, 100_000, TOL, f0, scalar_held)
    row["scalar_dyn"] = [mean_cosine(zs, pred[0]), mean_cosine(fs, pred[1])]  # the same descent with Θ = K ⊗ I
    row["coupling"] = []
    for lam in couplings:
        theta_l = scalar + lam * (theta - scalar)
        zl, fl, _ = train_outputs(z0, theta_l, lr, 100_000, TOL, f0, scalar_held + lam * (theta_held - scalar_held))
        cosines = [S.principal_cosines(zl, pred[0]), S.principal_cosines(fl, pred[1])]
        shares = mode_shares(theta_l, k, zl)
        row["coupling"].append({"lambda": lam, "ratio": lam * eps / (1 - row["gap"]), **davis_kahan(theta_l, k),
                                "sin_y": sin_y(shares, out_dim), "shares": shares[: out_dim + 3].tolist(),
                                "mean": [float(c.mean()) for c in cosines], "last": [float(c[-1]) for c in cosines]})
    more = S.final_embedding(k, u[:, : out_dim + 2], gamma[: out_dim + 2], k_held)
    row["dyn_within_2_more"] = mean_cosine(f, more)  # 1 iff the trained span lies in the top D + 2 modes

    flat, flat_held = views.flatten(1), held.flatten(1)
    k_inf = relu_ntk(flat, flat, depth=2, bias_scale=BIAS)
    g_inf, u_inf = S.kernel_modes(k_inf)
    limit = [S.final_embedding(k_inf, u_inf[:, :out_dim], g_inf[:out_dim], kx)
             for kx in (k_inf, relu_ntk(flat, flat_held, depth=2, bias_scale=BIAS))]
    row["limit"] = [mean_cosine(z, limit[0]), mean_cosine(f, limit[1])]

    swap = S.swap(len(views) // 2)
    for name, optimum in (("contrastive", contrastive_optimum), ("noncontrastive", noncontrastive_optimum)):
        zk = optimum(k, swap, out_dim)
        fk = [representation(k, zk, kx) for kx in (k, k_held)]
        row[name] = [mean_cosine(z, fk[0]), mean_cosine(f, fk[1]), mean_cosine(pred[1], fk[1])]

    trained = f @ f.T
    row["kernel_full"] = relative(coupled_representation(theta, theta_held, z) @
                                  coupled_representation(theta, theta_held, z).T, trained)
    row["kernel_scalar"] = relative(induced_kernel(k, z.T, k_held), trained)
    row["kernel_pred"] = relative(pred[1] @ pred[1].T, trained)
    z1, z2 = z.chunk(2)
    row["invariance"] = float((z1 - z2).norm() ** 2 / (z1.norm() ** 2 + z2.norm() ** 2))
    return row


def int_or(word: str, flag: str, least: int):
    """An argparse type: an integer ≥ least, or `word`."""
    def parse(value: str) -> int | str:
        if value == word:
            return value
        if not value.isdigit() or int(value) < least:
            raise argparse.ArgumentTypeError(f"{flag} {value!r}: an integer ≥ {least} or {word!r}")
        return int(value)
    return parse


def mechanism(row: dict, out_dim: int) -> tuple[float, list[float], list[float]]:
    """ε/(1 − γ_{D+1}/γ_D), and the last and the mean principal cosine (views, held-out)."""
    cosines = row["dyn_cosines"]
    return (row["eps"] / (1 - row["gap"]), [c[out_dim - 1] for c in cosines],
            [sum(c) / len(c) for c in cosines])


def figure(results: dict[str, dict], out: Path) -> None:
    """The last and the mean principal cosine (held-out: filled, views: open) against
    ε/(1 − γ_{D+1}/γ_D), one marker per result file, one colour per width."""
    widths = sorted({r["width"] for result in results.values() for r in result["rows"]})
    colour = dict(zip(widths, plt.cm.viridis([i / max(len(widths) - 1, 1) * 0.9 for i in range(len(widths))])))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for (label, result), marker in zip(results.items(), "os^D"):
        for r in result["rows"]:
            dk, last, mean = mechanism(r, r.get("out_dim", result["out_dim"]))
            for ax, y in zip(axes, (last, mean)):
                ax.scatter([dk], [y[1]], color=colour[r["width"]], marker=marker, s=22)
                ax.scatter([dk], [y[0]], facecolor="none", edgecolor=colour[r["width"]], marker=marker, s=22)
        axes[0].scatter([], [], color="grey", marker=marker, label=label)
    for w in widths:
        axes[0].scatter([], [], color=colour[w], marker="s", label=f"width {w}")
    axes[1].axhline(0.95, color="grey", lw=0.5)
    for ax, what in zip(axes, ("last (D-th) principal cosine", "mean principal cosine")):
        ax.set(xlabel=r"$\varepsilon\,/\,(1 - \gamma_{D+1}/\gamma_D)$", ylabel=what, title=f"{what}: held-out (filled), views (open)")
    axes[0].legend(fontsize=7)
    fig.savefig(out.with_suffix(".png"), dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", type=int_or("auto", "--pairs", 2), default=64,
                        help="N, or 'auto': per run the largest of --pair-choices with sin θ bound ≤ --max-bound")
    parser.add_argument("--pair-choices", type=int, nargs="+", default=[8, 16, 24, 32, 48, 64])
    parser.add_argument("--min-race-margin", type=float, default=0.0,
                        help="with --pairs auto and D = 2: also mode 2's lead at init ≥ this (0: not used)")
    parser.add_argument("--max-bound", type=float, default=0.312,
                        help="largest sin θ bound --pairs auto accepts (0.312: every cosine ≥ 0.95)")
    parser.add_argument("--out-dim", type=int_or("gap", "--out-dim", 1), default=8, help="D, or 'gap': chosen per run in --gap-range")
    parser.add_argument("--gap-range", type=int, nargs=2, default=[4, 10], metavar=("LO", "HI"),
                        help="the D that --out-dim gap chooses from, LO ≤ D ≤ HI")
    parser.add_argument("--eta", type=float, default=0.1, help="η·γ₁")
    parser.add_argument("--alpha", type=float, default=1e-10, help="init scale of the offsets")
    parser.add_argument("--network", type=int, nargs="*", default=[], help="widths also trained as modules")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures" / "theory_digits.json")
    parser.add_argument("--coupling", type=float, nargs="*", default=[],
                        help="λ: also train with Θ = K⊗I + λ(Θ − K⊗I) and print its cosines")
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="earlier JSON results drawn in the chart too")
    parser.add_argument("--negate-last-output", action="store_true",
                        help="start from the last output's initial values negated (the loss does not see it)")
    args = parser.parse_args()
    lo, hi = args.gap_range
    fewest = min(args.pair_choices) if args.pairs == "auto" else args.pairs
    if not 1 <= lo <= hi or (args.pairs != "auto" and hi + 2 > 2 * fewest) or lo + 2 > 2 * fewest:
        parser.error(f"--gap-range {lo} {hi}: needs 1 ≤ LO ≤ HI and HI + 2 ≤ 2·pairs = {2 * fewest} "
                     "(with --pairs auto: LO + 2 ≤ 2·min(--pair-choices); HI is capped at 2N − 2)")
    if min(args.pair_choices) < 2 or not 0 < args.max_bound < 1:
        parser.error(f"--pair-choices {args.pair_choices} --max-bound {args.max_bound}: "
                     "needs every choice ≥ 2 and 0 < max-bound < 1")
    out_dim = range(lo, hi + 1) if args.out_dim == "gap" else args.out_dim
    rows, skipped = [], []
    print("width seed   N  D  race steps  dyn(train held)  last(train held)  gap    eps  ε/(1−gap)  DK    bound √(1−b²) sinM sinY  "
          "limit(train held)  kiani c(train held dyn) n(train held dyn)"
          "  kernel(full scalar pred)  inv   D+2  K⊗I(train held)  copies of modes D−1 … D+2 / γ")
    for w in args.widths:
        for s in args.seeds:
            pairs, d = args.pairs, out_dim
            if pairs == "auto":
                chosen = well_posed_size(w, s, args.pair_choices, out_dim, args.alpha, args.max_bound,
                                         args.min_race_margin, args.eta, args.negate_last_output)
                if chosen is None:
                    skipped.append({"width": w, "seed": s})
                    race = f" and a race margin ≥ {args.min_race_margin}" if args.min_race_margin > 0 else ""
                    print(f"{w:5d} {s:4d}  no N in {args.pair_choices} has a sin θ bound ≤ {args.max_bound}{race}",
                          flush=True)
                    continue
                pairs, d = chosen
            views, held = data(pairs)
            r = one(w, s, d, args.eta, args.alpha, views, held, w in args.network, args.coupling,
                    args.negate_last_output)
            rows.append(r)
            dk, last, _ = mechanism(r, r["out_dim"])
            floor = math.sqrt(1 - r["dk_bound"] ** 2) if r["dk_bound"] < 1 else 0.0
            race = "   –  " if r["race_margin"] is None else f"{r['race_margin']:6.3f}"
            print(f"{w:5d} {s:4d} {pairs:3d} {r['out_dim']:2d} {race} {r['steps']:6d}  {r['dyn'][0]:.3f} {r['dyn'][1]:.3f}      "
                  f"{last[0]:.3f} {last[1]:.3f}      {r['gap']:.3f}  {r['eps']:.3f}  {dk:.3f}     {r['davis_kahan']:5.2f} "
                  f"{r['dk_bound']:5.2f} {floor:.3f} {r['dk_sin']:.3f} {r['whitened_sin']:.3f}  "
                  f"{r['limit'][0]:.3f} {r['limit'][1]:.3f}        "
                  f"{' '.join(f'{c:.3f}' for c in r['contrastive'])}   "
                  f"{' '.join(f'{c:.3f}' for c in r['noncontrastive'])}   "
                  f"{r['kernel_full']:.1e} {r['kernel_scalar']:.3f} {r['kernel_pred']:.3f}  {r['invariance']:.3f} {r['dyn_within_2_more']:.3f}  "
                  f"{r['scalar_dyn'][0]:.3f} {r['scalar_dyn'][1]:.3f}  "
                  f"{' '.join(f'{lo:.2f}..{hi:.2f}' for lo, hi in r['copies'])}"
                  + (f"  network vs outputs {r['network_vs_outputs']:.1e}" if "network_vs_outputs" in r else ""),
                  flush=True)
            for c in r["coupling"]:
                print(f"    coupling λ = {c['lambda']:.2f}: λε/(1−gap) {c['ratio']:.3f}  mean(train held) "
                      f"{c['mean'][0]:.3f} {c['mean'][1]:.3f}  last(train held) {c['last'][0]:.3f} {c['last'][1]:.3f}  "
                      f"DK {c['dk']:.3f} bound {c['bound']:.3f} sinM {c['sin']:.3f} sinY {c['sin_y']:.3f}  "
                      f"‖y‖² share of modes 1…D+3 {' '.join(f'{v:.3f}' for v in c['shares'])}",
                      flush=True)
    result = {"pairs": args.pairs, "out_dim": args.out_dim, "gap_range": args.gap_range, "alpha": args.alpha,
              "eta": args.eta, "negate_last_output": args.negate_last_output, "rows": rows}
    if args.pairs == "auto":
        result.update(pair_choices=args.pair_choices, max_bound=args.max_bound, min_race_margin=args.min_race_margin,
                      skipped=skipped)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    results = [result] + [json.loads(p.read_text()) for p in args.compare]
    figure({label(r): r for r in results}, args.out)


def label(result: dict) -> str:
    """A result file's legend entry: how D and the problem were chosen."""
    d = (f"D by widest gap, {result['gap_range'][0]}…{result['gap_range'][1]}" if result["out_dim"] == "gap"
         else f"D = {result['out_dim']}")
    race = f", race margin ≥ {result['min_race_margin']}" if result.get("min_race_margin") else ""
    return d + race + (", last output negated" if result.get("negate_last_output") else "")


if __name__ == "__main__":
    main()
