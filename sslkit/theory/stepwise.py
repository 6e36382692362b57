"""Stepwise learning of the simplified Barlow Twins loss (Simon et al. 2023): which
eigen-modes are learned, when, and what the final embedding is. docs/theory.md derives
every formula below.

Conventions (those of sslkit's training loop):

- View pairs (x1_n, x2_n), n = 1 … N; embeddings Z1, Z2 (N, D);
  C = (Z1ᵀZ2 + Z2ᵀZ1) / (2N) and L = ‖C − I‖²_F (`loss=barlow_twins_simplified`).
- Time t = η·step / (1 − β) for SGD with learning rate η and heavy-ball momentum β
  (`time_unit`); the run follows the gradient flow dθ/dt = −∇L to O(ηγ₁).
- Linear model f(x) = W x, W (D, m), W₀ entries N(0, α²/m) (`sslkit.models.Linear`,
  init_scale α). Its operator is the views' cross-covariance Γ = (X1ᵀX2 + X2ᵀX1)/(2N),
  eigenpairs (γₖ, vₖ). Kernel form: K the (2N, 2N) Gram matrix of the stacked views
  [X1; X2], P the swap of each view with its partner; the operator K^{1/2} P K^{1/2}/(2N)
  has the same non-zero eigenvalues γₖ, with eigenvectors uₖ ∈ R^{2N}.
- Mode amplitudes aₖ ∈ R^D: aₖ = W₀ vₖ (linear), aₖ = Z₀ᵀ K^{+1/2} uₖ (kernel, Z₀ the
  outputs on the stacked views at t = 0). While C ≈ 0, aₖ grows as e^{4γₖ t}, and
  C = Σₖ γₖ aₖ aₖᵀ.

Assumptions of the closed form: small init (cₖ(0) ≪ 1), small ηγ₁ (so steps follow the
flow), full batch or a batch large enough that the per-step Γ is close to its mean, and
D ≥ the number of modes to be learned. When they break: D below the number of modes
stops learning at D modes (only D output directions exist); minibatch noise makes Γ
fluctuate per step, which blurs and shifts the late, small-γ steps; large η makes the
discrete growth factor (1 + 4ηγ)² per step differ from e^{8ηγ} (half-times late by ≈ 2ηγ
relative; unstable for ηγ₁ ≳ ¼).
"""

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


def time_unit(lr: float, momentum: float = 0.0) -> float:
    """Time per optimizer step, η/(1 − β): t = time_unit·step."""
    return lr / (1.0 - momentum)


def cross_covariance(x1: Tensor, x2: Tensor) -> Tensor:
    """Γ = (X1ᵀX2 + X2ᵀX1) / (2N) of paired views (N, ...) flattened to (N, m), float64."""
    x1, x2 = x1.flatten(1).double(), x2.flatten(1).double()
    return (x1.T @ x2 + x2.T @ x1) / (2 * len(x1))


def _descending_eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    values, vectors = torch.linalg.eigh((a + a.T) / 2)
    return values.flip(0), vectors.flip(1)


def linear_modes(gamma_matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs (γ (m,), V (m, m)) of Γ, γ descending."""
    return _descending_eigh(gamma_matrix.double())


def _sqrt_psd(k: Tensor, inverse: bool = False, rtol: float = 1e-10) -> Tensor:
    """K^{1/2}, or the pseudo-inverse K^{+1/2} (eigenvalues below rtol·max dropped)."""
    w, q = torch.linalg.eigh((k + k.T) / 2)
    keep = w > rtol * w.max()
    root = torch.where(keep, w.clamp(min=0).sqrt(), torch.zeros_like(w))
    if inverse:
        root = torch.where(keep, 1 / root.clamp(min=torch.finfo(w.dtype).tiny), root)
    return (q * root) @ q.T


def swap(n_pairs: int) -> Tensor:
    """P (2N, 2N): exchanges row n of the stacked views [X1; X2] with row N + n."""
    i = torch.arange(2 * n_pairs)
    return torch.eye(2 * n_pairs, dtype=torch.float64)[(i + n_pairs) % (2 * n_pairs)]


def kernel_modes(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs (γ, U) of K^{1/2} P K^{1/2} / (2N) for the Gram matrix K (2N, 2N) of the
    stacked views [X1; X2], γ descending. For K = XXᵀ (features X) the non-zero γₖ are
    those of Γ, and vₖ = Xᵀ K^{+1/2} uₖ."""
    k = gram.double()
    n = len(k) // 2
    root = _sqrt_psd(k)
    return _descending_eigh(root @ swap(n) @ root / (2 * n))


def kernel_amplitudes(z0: Tensor, gram: Tensor, u: Tensor) -> Tensor:
    """aₖ = Z₀ᵀ K^{+1/2} uₖ as the columns of a (D, K) matrix (Z₀ (2N, D): outputs on the
    stacked views at t = 0)."""
    return z0.double().T @ _sqrt_psd(gram.double(), inverse=True) @ u


def initial_levels(gamma: Tensor, amplitudes: Tensor) -> Tensor:
    """cₖ(0) for the closed form, from the run's actual initialisation.

    `amplitudes` (D, K) holds aₖ (W₀vₖ, or Z₀ᵀK^{+1/2}uₖ). Mode k is learned in the output
    directions the earlier modes left free: once modes 1 … k−1 have saturated along
    directions spanning a₁ … aₖ₋₁, (C − I) vanishes on them and only the part of aₖ
    orthogonal to them keeps growing. With the QR factorisation A = QR,
    cₖ(0) = γₖ R²ₖₖ (leading order in the init scale). Only min(D, K) modes can be learned;
    the result has that length. For W₀ entries N(0, α²/m), E R²ₖₖ = α²(D − k + 1)/m
    (`expected_levels`). Batched over leading dimensions of `amplitudes`."""
    r = torch.linalg.qr(amplitudes.double(), mode="r").R
    d = min(r.shape[-2:])
    return gamma[:d] * r.diagonal(dim1=-2, dim2=-1)[..., :d] ** 2


def expected_levels(gamma: Tensor, alpha: float, in_dim: int, out_dim: int) -> Tensor:
    """cₖ(0) = γₖ α² (D − k + 1)/m: `initial_levels` averaged (in R²ₖₖ) over W₀ with entries
    N(0, α²/m); k = 1 … min(D, K)."""
    d = min(out_dim, len(gamma))
    free = out_dim - torch.arange(d, dtype=torch.float64)
    return gamma[:d] * alpha**2 * free / in_dim


def half_times(gamma: Tensor, c0: Tensor) -> Tensor:
    """tₖ = ln((1 − cₖ(0)) / cₖ(0)) / (8γₖ): when the logistic cₖ(t) crosses ½."""
    g = gamma[: len(c0)]
    return torch.log((1 - c0) / c0) / (8 * g)


def logistic(t: Tensor, gamma: Tensor, c0: Tensor) -> Tensor:
    """cₖ(t) = 1 / (1 + (1 − cₖ(0))/cₖ(0) · e^{−8γₖ t}), the solution of dc/dt = 8γc(1 − c):
    (T,) times → (T, K) eigenvalues of C for aligned initialisation."""
    g = gamma[: len(c0)]
    return 1 / (1 + ((1 - c0) / c0) * torch.exp(-8 * g * t.double()[:, None]))


def init_scale_slope(gamma: Tensor) -> Tensor:
    """dtₖ / d ln(1/α) = 1/(4γₖ): cₖ(0) ∝ α², so ln((1 − c₀)/c₀) = 2 ln(1/α) + const + O(c₀)."""
    return 1 / (4 * gamma)


def staircase(eigenvalues: Tensor, out_dim: int) -> Tensor:
    """The loss Σᵢ (1 − cᵢ)² over the D eigenvalues of C (the off-diagonal part vanishes for
    aligned modes), from (T, K) predicted eigenvalues; with k modes at 1 and the rest at 0
    it is D − k."""
    c = eigenvalues[:, :out_dim]
    return ((1 - c) ** 2).sum(1) + (out_dim - c.shape[1])


def _solve(rhs, y0: np.ndarray, t: np.ndarray, rtol: float) -> np.ndarray:
    from scipy.integrate import solve_ivp  # here: a run's figure imports this module, not SciPy (≈ 0.4 s)

    sol = solve_ivp(lambda _, y: rhs(y), (0.0, float(t[-1])), y0, t_eval=t, method="DOP853",
                    rtol=rtol, atol=1e-14)
    if not sol.success:
        raise RuntimeError(f"the ODE integration failed: {sol.message}")
    return sol.y.T


def integrate_weights(w0: Tensor, gamma_matrix: Tensor, t: Tensor, rtol: float = 1e-8) -> Tensor:
    """The full matrix ODE of the linear model, dW/dt = −∇L = −4 (WΓWᵀ − I) W Γ, from W₀
    (D, m): the descending eigenvalues of C(t) = W Γ Wᵀ at the times t (T,), (T, D)."""
    g = gamma_matrix.double().numpy()
    shape = tuple(w0.shape)

    def rhs(y: np.ndarray) -> np.ndarray:
        w = y.reshape(shape)
        wg = w @ g
        return (-4 * (wg @ w.T - np.eye(shape[0])) @ wg).ravel()

    ws = _solve(rhs, w0.double().numpy().ravel(), t.double().numpy(), rtol).reshape(-1, *shape)
    c = torch.from_numpy(ws @ g @ ws.transpose(0, 2, 1))  # W Γ Wᵀ at each time: two batched products
    return torch.linalg.eigvalsh(c).flip(-1)


def iterate_weights(w0: Tensor, gamma_matrix: Tensor, lr: float, momentum: float, steps: np.ndarray) -> Tensor:
    """The optimizer's own iteration on the linear model, in place of the flow: heavy-ball SGD
    as torch.optim.SGD takes it, v ← βv + ∇L, W ← W − ηv, with ∇L = 4 (WΓWᵀ − I) W Γ, from W₀
    (D, m), v₀ = 0. Returns the descending eigenvalues of C = WΓWᵀ at `steps` (T,) (sorted
    step numbers), (T, D).

    While C ≈ 0 each mode's amplitude grows per step by ρₖ, the larger root of
    ρ² − (1 + β + 4ηγₖ)ρ + β = 0 (`step_growth`); the flow's e^{4γₖη/(1−β)} is its limit for
    4ηγₖ ≪ (1 − β)², and the half-times differ from the flow's by the ratio of the two rates
    (about 2× for mode 2 of experiment=stepwise_deep_digits, 4ηγ₂ = 0.018 against
    (1 − β)² = 0.01, and 9× for its mode 1)."""
    g = gamma_matrix.double()
    w, v = w0.double().clone(), torch.zeros_like(w0, dtype=torch.float64)
    eye = torch.eye(len(w), dtype=torch.float64)
    out, wanted = [], set(int(s) for s in steps)
    for step in range(int(steps[-1]) + 1):
        wg = w @ g
        if step in wanted:
            out.append(torch.linalg.eigvalsh(wg @ w.T).flip(-1))
        v = momentum * v + 4 * (wg @ w.T - eye) @ wg
        w = w - lr * v
    return torch.stack(out)


def step_growth(gamma: Tensor, lr: float, momentum: float) -> Tensor:
    """ρₖ: the factor by which heavy-ball SGD multiplies mode k's amplitude per step near C = 0,
    the larger root of ρ² − (1 + β + 4ηγₖ)ρ + β = 0 (from W_{t+1} = W_t + 4ηγ W_t + β(W_t − W_{t−1})
    along vₖ); 1 + 4ηγₖ without momentum."""
    b = 1 + momentum + 4 * lr * gamma
    return (b + torch.sqrt(b**2 - 4 * momentum)) / 2


def step_half_times(gamma: Tensor, c0: Tensor, lr: float, momentum: float) -> Tensor:
    """Half-times in steps of the iteration: cₖ ∝ ρₖ^{2·step} from cₖ(0) to ½ (the logistic's
    ln((1 − c₀)/c₀) at the discrete rate 2 ln ρₖ, for momentum's slow start exact only while
    cₖ ≪ 1)."""
    g = gamma[: len(c0)]
    return torch.log((1 - c0) / c0) / (2 * torch.log(step_growth(g, lr, momentum)))


def integrate_outputs(z0: Tensor, ntk: Tensor, t: Tensor, rtol: float = 1e-8,
                      new_ntk: Tensor | None = None, new_z0: Tensor | None = None):
    """Function-space gradient flow of a linearized network, dZ/dt = −Θ·∂L/∂Z, on the
    stacked views (Z (2N, D), rows [views 1; views 2]), ∂L/∂Z from `pair_gradient` and

        (Θ·G)[i, a] = Σ_{j, b} Θ[i, j, a, b] G[j, b],

    with `ntk` the full output-coupled eNTK (2N, 2N, D, D) (`empirical_ntk` layout), or a
    scalar kernel K as K[:, :, None, None]·I. It is exact for the linearized network: its
    outputs are Z₀ + J(θ − θ₀), and dθ/dt = −Jᵀ ∂L/∂Z. Returns the descending eigenvalues of
    C(t) (T, D), and, given `new_ntk` = Θ(x_new, views) (n, 2N, D, D) and the new points'
    outputs at t = 0, their outputs at the last time (n, D), which move by
    df(x)/dt = −Θ(x, views)·∂L/∂Z."""
    n2, d = z0.shape
    n = n2 // 2
    theta = output_matrix(ntk, n2, d)
    new = None if new_ntk is None else output_matrix(new_ntk, n2, d, rows=len(new_ntk))
    y0 = z0.double().numpy().ravel()
    if new is not None:
        y0 = np.concatenate([y0, new_z0.double().numpy().ravel()])

    def rhs(y: np.ndarray) -> np.ndarray:
        grad = pair_gradient(y[: n2 * d].reshape(n2, d)).ravel()
        out = -theta @ grad
        return out if new is None else np.concatenate([out, -new @ grad])

    ys = _solve(rhs, y0, t.double().numpy(), rtol)
    zs = torch.from_numpy(ys[:, : n2 * d].reshape(-1, n2, d))
    c = (zs[:, :n].mT @ zs[:, n:] + zs[:, n:].mT @ zs[:, :n]) / (2 * n)
    eig = torch.linalg.eigvalsh(c).flip(-1)
    if new is None:
        return eig
    return eig, torch.from_numpy(ys[-1, n2 * d:].reshape(-1, d))


def pair_gradient(z: np.ndarray) -> np.ndarray:
    """∂L/∂Z of L = ‖C − I‖²_F on the stacked views Z = [Z1; Z2] (2N, D):
    [2 Z2 (C − I)/N; 2 Z1 (C − I)/N]."""
    n = len(z) // 2
    z1, z2 = z[:n], z[n:]
    c = (z1.T @ z2 + z2.T @ z1) / (2 * n) - np.eye(z.shape[1])
    return (2 / n) * np.concatenate([z2 @ c, z1 @ c])


def output_matrix(ntk: Tensor, cols: int, d: int, rows: int | None = None) -> np.ndarray:
    """Θ[i, j, a, b] → the ((rows·D), (cols·D)) matrix of (i, a), (j, b)."""
    rows = cols if rows is None else rows
    return ntk.double().permute(0, 2, 1, 3).reshape(rows * d, cols * d).numpy()


def race_margin(ntk: Tensor, z0: Tensor, gram: Tensor, lr: float, max_steps: int = 1_000_000) -> dict:
    """Which mode the second output direction learns (D = 2), read off the linear phase.

    Near Z = 0, ∂L/∂Z = −(2/N)·PZ + O(Z³), so the descent with the full output-coupled
    eNTK Θ (`ntk` (2N, 2N, 2, 2)) is Z ← Z + (2η/N)·Θ·PZ, every mode of the operator
    growing on its own. Iterated from Z₀ until C's largest eigenvalue reaches ½ (the first
    mode half learned, step t₁); w = Z v along C's other eigenvector v then holds each
    scalar mode k (`kernel_modes` of the Gram matrix K) at the level cₖ = γₖ (wᵀK^{+1/2}uₖ)²
    it would give C. Growing as e^{8γₖ t}, mode k reaches C = 1 after τₖ ∝ ln(1/cₖ)/γₖ.
    Returns {"margin": (min_{k≥3} τₖ − τ₂)/τ₂, mode 2's relative lead, "levels": c (K,),
    "step": t₁}. With Θ = K ⊗ I the levels are the initial ones times (1 + 4ηγₖ)^{2t₁}.
    The cross-output blocks of Θ add to w a part carried by the growing first mode that
    does not scale with the init, so the margin depends on the init's signs as well as on
    the operator (docs/theory.md, "A well-posed version"). The rule stops at t₁; what
    happens after, when the first mode saturates, is not modelled."""
    n2, d = z0.shape
    if d != 2:
        raise ValueError(f"race_margin is for D = 2 outputs, got D = {d}")
    n = n2 // 2
    step_matrix = lr * (2 / n) * output_matrix(ntk, n2, d) @ np.kron(swap(n).numpy(), np.eye(d))
    z = z0.double().flatten().numpy()
    for step in range(max_steps + 1):
        zz = torch.from_numpy(z.reshape(n2, d))
        values, vectors = torch.linalg.eigh(cross_covariance(zz[:n], zz[n:]))
        if values[-1] >= 0.5 or step == max_steps:
            break
        z = z + step_matrix @ z
    gamma, u = kernel_modes(gram)
    levels = gamma * kernel_amplitudes(zz @ vectors[:, :1], gram, u)[0] ** 2
    keep = gamma > 1e-12 * gamma[0]
    tau = torch.log(1 / levels[keep]) / gamma[keep]
    return {"margin": float((tau[2:].min() - tau[1]) / tau[1]), "levels": levels, "step": step}


def final_embedding(gram: Tensor, u: Tensor, gamma: Tensor, k_new: Tensor) -> Tensor:
    """The embedding the small-init dynamics converges to, up to an orthogonal rotation of
    its D outputs: fⱼ(x) = γⱼ^{-1/2} uⱼᵀ K^{+1/2} k_X(x) for the learned modes j (the
    columns of u, γ their eigenvalues), with k_X(x) = (k(xᵢ, x))ᵢ over the 2N stacked
    views; `k_new` (2N, n) holds k_X of n new points. Returns (n, d). For a linear model
    this is γⱼ^{-1/2} vⱼᵀ x: mode j saturated at cⱼ = γⱼ sⱼ² = 1."""
    return (k_new.double().T @ _sqrt_psd(gram.double(), inverse=True) @ u) / gamma.sqrt()


def widest_gap(spectrum: Callable[[int], Tensor], dims: range) -> int:
    """The output dimension D in `dims` whose operator separates its top D modes best:
    argmin_D γ_{D+1}/γ_D, with γ = spectrum(D) descending (the operator may depend on D,
    as the scalar eNTK of a network with D outputs does). By Davis–Kahan, a symmetric
    perturbation E of the operator turns its top-D eigenspace by ‖sin Θ‖ ≲ ‖E‖/(γ_D − γ_{D+1})
    (up to a factor 2, Yu, Wang & Samworth 2015), so a prediction made from the operator
    pins down the learned subspace best at the widest relative gap. Choose D with it
    before training, never from the trained result."""
    def ratio(d: int) -> float:
        gamma = spectrum(d)
        return float(gamma[d] / gamma[d - 1])

    return min(dims, key=ratio)


def sin_theta(m: Tensor, v: Tensor) -> tuple[float, float, float]:
    """Davis and Kahan's sin θ theorem for the symmetric operator m (n, n) and the span of
    v (n, r), orthonormal columns, an invariant subspace of an unperturbed operator m₀ with
    m = m₀ + E (e.g. the top-r eigenvectors of m₀). With H = vᵀmv and the residual
    R = mv − vH = (1 − Π)EΠ·v (Π = vvᵀ; m₀v = vΛ removes m₀), and V̂ the top-r eigenspace
    of m:

        ‖sin Θ(v, V̂)‖₂ ≤ ‖R‖₂ / δ,   δ = λ_min(H) − λ_{r+1}(m) > 0

    (Davis & Kahan 1970, the sin θ theorem with the eigenvalues of H in [λ_min(H), ·] and
    those of m off V̂ all ≤ λ_{r+1}(m); Stewart & Sun 1990, Thm V.3.6). Returns ‖R‖₂, δ
    and the largest sin Θ itself, √(1 − σ_min(vᵀV̂)²). Everything is computed from m and
    v, so the bound holds or the theorem is wrong."""
    m = (m + m.T) / 2
    r = v.shape[1]
    h = v.T @ m @ v
    residual = float(torch.linalg.matrix_norm(m @ v - v @ h, ord=2))
    values, vectors = _descending_eigh(m)
    separation = float(torch.linalg.eigvalsh(h)[0] - values[r])
    cosine = float(torch.linalg.svdvals(v.T @ vectors[:, :r]).min().clamp(max=1))
    return residual, separation, math.sqrt(1 - cosine**2)


def well_posed(sizes: list[int], ratio: Callable[[int], float], max_ratio: float) -> int | None:
    """The largest size n in `sizes` whose problem is determined by its operator:
    ratio(n) ≤ max_ratio, with ratio(n) the sin θ bound ‖R‖₂/δ of `sin_theta` (∞ where
    δ ≤ 0), evaluated at initialisation. None if no size qualifies. Since ‖sin Θ‖ ≤ ratio,
    the chosen problem's operator keeps its top eigenspace within principal cosines
    ≥ √(1 − max_ratio²) of the prediction's (0.95 for max_ratio = √(1 − 0.95²) = 0.312):
    a statement made before training. Sizes are tried from the largest down, and the
    trained result plays no part."""
    for n in sorted(sizes, reverse=True):
        if ratio(n) <= max_ratio:
            return n
    return None


def principal_cosines(f1: Tensor, f2: Tensor) -> Tensor:
    """Cosines of the principal angles between the column spans of f1 (n, d1) and f2 (n, d2)
    in Rⁿ (descending, min(d1, d2) of them): the singular values of Q1ᵀQ2 for orthonormal
    bases Q1, Q2. Their mean is 1 iff one span contains the other."""
    q1 = torch.linalg.qr(f1.double()).Q
    q2 = torch.linalg.qr(f2.double()).Q
    return torch.linalg.svdvals(q1.T @ q2)


def crossing_times(t: np.ndarray, eigenvalues: np.ndarray, level: float = 0.5) -> np.ndarray:
    """For each column (mode) of (T, K) eigenvalues, the time at which it first reaches
    `level`, linearly interpolated between samples; nan where it never does."""
    out = np.full(eigenvalues.shape[1], math.nan)
    for k in range(eigenvalues.shape[1]):
        above = np.nonzero(eigenvalues[:, k] >= level)[0]
        if len(above) == 0:
            continue
        i = above[0]
        if i == 0:
            out[k] = t[0]
            continue
        lo, hi = eigenvalues[i - 1, k], eigenvalues[i, k]
        out[k] = t[i - 1] + (level - lo) / (hi - lo) * (t[i] - t[i - 1])
    return out
