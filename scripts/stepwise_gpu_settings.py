"""The spectrum that sets the pace of experiment=stepwise_resnet18_gpu, at initialisation.

    python scripts/stepwise_gpu_settings.py [OVERRIDES...]

With the embedding layer z = W f small, C ≈ W Γ Wᵀ, where Γ = (f₁ᵀf₂ + f₂ᵀf₁)/2N is the
symmetrised cross-covariance of the features f that enter the last Linear (backbone and
projector up to it, BatchNorm on batch statistics as in training), averaged over 4 draws
of the views. Mode k of C grows at a rate ∝ η·γ_k, so the learning rate is tied to γ₁
(stable for 8ηγ₁ < 2; the default experiment uses η ≈ 0.1/γ₁) and mode k comes ≈ γ₁/γ_k
times later than the first. Prints γ₁…γ₁₂ and, last, `optim.lr=0.1/γ₁` with a step
budget of 2.5·20·γ₁/γ₅ (the first mode of the digits experiment crosses ½ at step 20), at
most 2000 steps.
"""

import sys

import torch
from hydra import compose, initialize_config_dir

from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs
from sslkit.rng import VIEWS, generator
from sslkit.run import resolve_device
from sslkit.step import Step


@torch.no_grad()
def main(overrides: list[str]) -> None:
    register_configs()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=stepwise_resnet18_gpu", *overrides])
    device = resolve_device(cfg.device.value)
    step = Step.build(cfg, device)
    features = torch.nn.Sequential(step.net.backbone, *list(step.net.projector)[:-1])
    x = next(step.data.batches(cfg.seed))[1]
    gamma = 0
    for draw in range(4):
        f1, f2 = (features(v.float()).double() for v in step.augment(x, generator(device, cfg.seed, VIEWS, 99, draw)))
        gamma = gamma + (f1.T @ f2 + f2.T @ f1) / (2 * len(f1)) / 4
    ev = torch.linalg.eigvalsh(gamma).flip(0).cpu()
    print("gamma:", " ".join(f"{v:.4g}" for v in ev[:12]))
    print("gamma_1/gamma_k:", " ".join(f"{ev[0] / v:.3g}" for v in ev[:12]))
    print(f"optim.lr={0.1 / ev[0]:.3g} trainer.max_steps={min(2000, int(2.5 * 20 * ev[0] / ev[4]))}")


if __name__ == "__main__":
    main(sys.argv[1:])
