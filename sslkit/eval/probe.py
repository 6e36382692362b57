"""Linear classifiers on frozen features: the online probe, trained as training batches
pass, and the offline fit on a feature cache (`sslkit-eval`)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sslkit.errors import ConfigError
from sslkit.eval.features import ProbeFeatures, ProbeInput, kinds
from sslkit.optim import Schedule, lr_factor


class LinearProbe(nn.Module):
    """logits = W·BN(x) + b: a linear classifier on features standardised per dimension
    (BatchNorm without affine parameters, as in MAE's linear probe), so that its learning
    rate does not depend on the features' scale, which changes by orders of magnitude
    while a small-initialised model learns (hence eps = 1e-12, not BatchNorm's 1e-5: at
    α = 10⁻³ the features' variances are about 10⁻⁶). The running statistics follow the
    features with momentum ½, from the first batch's statistics on (see OnlineProbe).
    W and b start at zero (no random numbers)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, eps=1e-12, momentum=0.5, affine=False)
        self.linear = nn.Linear(dim, classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))


WEIGHT_DECAY = 1e-4  # λ of both linear fits: OnlineProbe's default and sslkit-eval's


class OnlineProbe(nn.Module):
    """eval=online_probe: one LinearProbe per feature kind of `dims` ({kind: dim}) that
    `features` lists (None: every kind), trained with its own SGD (momentum, weight decay
    λ on W, a `schedule` over `total_steps`) on detached features of each training batch,
    those `input` names (the Evaluation computes them); samples labelled −1 are skipped.

    It minimises sslkit-eval's objective, mean cross-entropy + λ/2·‖W‖² (fit_linear, the
    same default λ = WEIGHT_DECAY), so that on the final features both estimate one convex
    optimum. Without λ there is none on separable features (digits' are): ‖W‖ grows for
    as long as SGD runs, and the accuracy depends on where it stops. That optimum is
    λ-strongly convex, and its slowest mode decays as (1 − lr·λ/(1 − momentum))ᵗ, one e-fold
    per 3300 SGD steps at lr 0.3, momentum 0.9, λ = 10⁻⁴: more than a short run has. So the
    probe takes `steps_per_batch` SGD steps for each batch, `steps_per_batch`·`total_steps` in
    all; the linear steps cost little beside the network's. Those steps run on the features
    of the last `window` samples at most: this batch and as many of the batches before it as
    fit (kept detached, standardised together by their own statistics), so 8 batches of 256
    and one full batch of digits. 16 steps on one batch of 256 fit that batch, whose optimum
    lies further from the population's than the ill-conditioned directions of Barlow Twins'
    features forgive (on 17 MNIST-1D runs the batch alone ends 0.73 points below sslkit-eval
    on average, 2048 samples 0.47). The older batches' features were computed by the
    network up to window/batch steps back, and the average below reaches further: where
    the features turn at constant accuracy and a linear fit needs thousands of samples,
    the probe ends below sslkit-eval (24 MNIST-1D runs: 0.58 points on average).

    Scored with the exponential moving average of the heads (weights and statistics),
    updated once per batch: θ̄ ← ema·θ̄ + (1 − ema)·θ, θ̄ = θ after the first (ema = 0: the
    last iterate). The features are standardised, so one rate suits any feature scale. On
    features that are not linearly separable a constant rate leaves the iterate scattered
    about the optimum, by more the larger the rate (lr 1 ends 1.4–1.7 points below
    sslkit-eval on MNIST-1D); 16 steps per batch at lr 0.3 keep up with features that move
    as 4 at lr 1 did, the average of the last ~1/(1 − ema) = 20 batches damps the scatter,
    and a longer one lags the features. The schedule follows the training's
    (configs/eval/online_probe.yaml): the probe anneals when the features stop moving.
    Measured against sslkit-eval: docs/benchmarks.md, "The online probe's settings".

    Args:
        lr: The probe's SGD learning rate (on standardised features).
        momentum: The probe's SGD momentum, in [0, 1).
        weight_decay: λ of the penalty λ/2·‖W‖², sslkit-eval's λ.
        schedule: The probe's learning-rate schedule (online_probe.yaml: the training's).
        ema: Decay of the moving average of the heads that is scored (0: the last iterate).
        features: Feature kinds probed: backbone (h), projector (z); null: both.
        input: clean (features of the un-augmented images, one more forward pass) or view (view 1's, free).
        steps_per_batch: SGD steps of the probe per training batch.
        window: Most recent training samples whose features each step fits.
    """

    def __init__(self, dims: dict[str, int], classes: int, total_steps: int, lr: float = 0.3,
                 momentum: float = 0.9, weight_decay: float = WEIGHT_DECAY, schedule: Schedule = Schedule.constant,
                 ema: float = 0.95, features: Sequence[ProbeFeatures] | None = None,
                 input: ProbeInput = ProbeInput.clean, steps_per_batch: int = 16, window: int = 2048) -> None:
        super().__init__()
        if not lr > 0:
            raise ConfigError(f"eval.online_probe.lr={lr} is not allowed: use a positive learning rate, e.g. 0.3.")
        if not 0 <= momentum < 1:
            raise ConfigError(f"eval.online_probe.momentum={momentum} is not allowed: use a momentum in [0, 1), "
                              f"e.g. 0.9.")
        if not weight_decay >= 0:
            raise ConfigError(f"eval.online_probe.weight_decay={weight_decay} is not allowed: use λ >= 0, e.g. "
                              f"{WEIGHT_DECAY} (sslkit-eval's default).")
        if not 0 <= ema < 1:
            raise ConfigError(f"eval.online_probe.ema={ema} is not allowed: use a decay in [0, 1), e.g. 0.9 "
                              f"(0 scores the last iterate).")
        if steps_per_batch < 1:
            raise ConfigError(f"eval.online_probe.steps_per_batch={steps_per_batch} is not allowed: use a "
                              f"positive number of SGD steps per training batch, e.g. 1.")
        if window < 1:
            raise ConfigError(f"eval.online_probe.window={window} is not allowed: use a positive number of "
                              f"recent training samples to fit, e.g. 2048 (1: this batch only).")
        self.input = ProbeInput(input)
        self.steps_per_batch, self.window = steps_per_batch, window
        self.recent: list[dict[str, tuple[Tensor, Tensor]]] = []  # {kind: (features, labels)}, oldest first
        self.heads = nn.ModuleDict({kind: LinearProbe(dims[kind], classes)
                                    for kind in (dims if features is None else kinds(features))})
        weights = [head.linear.weight for head in self.heads.values()]
        biases = [head.linear.bias for head in self.heads.values()]
        self.optimizer = torch.optim.SGD([{"params": weights, "weight_decay": weight_decay},
                                          {"params": biases, "weight_decay": 0.0}], lr=lr, momentum=momentum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, schedule, 0, total_steps * steps_per_batch))
        self.average = AveragedModel(self.heads, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True)

    def train_step(self, features: dict[str, Tensor], labels: Tensor) -> None:
        """`steps_per_batch` SGD steps of every head on this batch and the batches before it
        that fit in `window` rows: mean cross-entropy over their labelled rows (label ≥ 0;
        none labelled: a zero gradient), standardised once (by their statistics, which update
        the running ones once); features of n rows go with labels[:n]. Then one update of
        the average. Never waits for the GPU."""
        first = self.scheduler.last_epoch == 0  # the first batch sets the running statistics
        self.heads.train()
        self.recent.append({kind: (features[kind].detach().float(),
                                   labels[: len(features[kind])].to(features[kind].device)) for kind in self.heads})
        rows = [len(next(iter(batch.values()))[1]) for batch in self.recent]
        while len(self.recent) > 1 and sum(rows) > self.window:
            del self.recent[0], rows[0]
        inputs, targets = {}, {}
        with torch.no_grad():
            for kind, head in self.heads.items():
                head.norm.momentum = 1.0 if first else 0.5
                inputs[kind] = head.norm(torch.cat([batch[kind][0] for batch in self.recent]))
                targets[kind] = torch.cat([batch[kind][1] for batch in self.recent])
        for _ in range(self.steps_per_batch):
            loss = 0.0
            with torch.enable_grad():
                for kind, head in self.heads.items():
                    y = targets[kind]
                    ce = F.cross_entropy(head.linear(inputs[kind]), y, ignore_index=-1, reduction="sum")
                    loss = loss + ce / (y >= 0).sum().clamp(min=1)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
        self.average.update_parameters(self.heads)

    @torch.no_grad()
    def scores(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """{kind: logits (N, classes)} of the averaged heads, with their running statistics."""
        self.average.eval()
        return {kind: head(features[kind]) for kind, head in self.average.module.items()}

    def state_dict(self, *args, **kwargs) -> dict:
        return {"heads": self.heads.state_dict(), "average": self.average.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "recent": self.recent}

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        self.heads.load_state_dict(state["heads"], strict=strict)
        self.average.load_state_dict(state["average"], strict=strict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.recent = state["recent"]


def fit_linear(x: Tensor, y: Tensor, classes: int, weight_decay: float = WEIGHT_DECAY, max_iter: int = 500) -> LinearProbe:
    """The LinearProbe minimising mean cross-entropy + weight_decay/2·‖W‖² on (x, y),
    fitted with full-batch L-BFGS (strong Wolfe line search) after setting the
    standardisation to the exact mean and (biased) variance of x. Convex: the result does
    not depend on the start."""
    probe = LinearProbe(x.shape[1], classes).to(x.device)
    with torch.no_grad():
        probe.norm.running_mean.copy_(x.mean(0))
        probe.norm.running_var.copy_(x.var(0, unbiased=False))
    probe.eval()
    xs = probe.norm(x).detach()
    optimizer = torch.optim.LBFGS(probe.linear.parameters(), lr=1, max_iter=max_iter,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe.linear(xs), y) + weight_decay / 2 * probe.linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe
