"""Evaluation during training: the online linear probe and the kNN monitor on the
held-out split, every `eval.every` steps.

Evaluation only observes. The probe trains with its own optimizer on detached features of
each training batch: by default (`eval.online_probe.input=clean`) those of the batch's
un-augmented images, computed as the held-out ones are, so that it learns the task
`sslkit-eval` measures and its last accuracy estimates sslkit-eval's (trained on view
features, `input=view`, it learns from the augmented inputs, which costs nothing but
scores lower: docs/benchmarks.md). Features are computed without gradients in eval mode
(BatchNorm statistics unchanged), and no random numbers are drawn, so the training
trajectory is the same with and without `eval` (tests/test_eval.py).

The held-out split is `data` with `split` = `eval.test_split` (default `test`: CIFAR's and
STL-10's official test sets, the last 297 digits) and, when set, `root` = `eval.test_root`
(an image folder of held-out images). The kNN bank and the probe's
training samples are the training data's labelled samples (label ≥ 0).
"""

import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from torch import Tensor, nn

from sslkit.data import InMemoryData
from sslkit.errors import ConfigError
from sslkit.methods import StepOutput
from sslkit.eval.features import extract, kinds, labelled
from sslkit.eval.knn import topk_accuracy

log = logging.getLogger(__name__)


def held_out(cfg: DictConfig) -> InMemoryData:
    """The held-out split: `cfg.data` with split = eval.test_split (where the data set has
    splits) and root = eval.test_root (when set)."""
    test = {"batch_size": 1}
    if cfg.eval.test_root is not None:
        test["root"] = cfg.eval.test_root
    if "split" in cfg.data:
        test["split"] = cfg.eval.test_split
    elif cfg.eval.test_root is None:
        raise ConfigError(
            f"{cfg.data._target_} has no held-out split to evaluate on (it has no data.split). Set "
            f"eval.test_root=DIR to the held-out images (laid out as data.root is), or use eval=none."
        )
    try:
        return instantiate(OmegaConf.merge(cfg.data, test))
    except ValidationError as exc:
        if str(exc.full_key).split(".")[-1] != "split":
            raise
        raise ConfigError(f"eval.test_split={cfg.eval.test_split} is not a split of {cfg.data._target_}: "
                          f"{str(exc).splitlines()[0]}.") from exc
    except ConfigKeyError as exc:
        raise ConfigError(f"eval.test_root={cfg.eval.test_root} is set, but {cfg.data._target_} reads no "
                          f"files (it has no data.root): drop eval.test_root.") from exc


def classes_of(*labels: Tensor) -> int:
    """1 + the largest label (labels are 0 … C−1; −1 marks an unlabeled sample)."""
    return 1 + max(int(y.max()) for y in labels)


class Evaluation:
    """Built by `Evaluation.build`; the loop calls `after_step` once per step."""

    def __init__(self, cfg: DictConfig, data: InMemoryData, test: InMemoryData, clean, net: nn.Module,
                 device: torch.device, total_steps: int) -> None:
        self.cfg, self.clean, self.net, self.device = cfg.eval, clean, net, device
        self.steps = total_steps
        self.bank_x, self.bank_y = labelled(data.x, data.y)
        self.test_x, self.test_y = test.x, test.y.to(device)
        self.classes = classes_of(self.bank_y, self.test_y)
        parts = [p for p in (self.cfg.online_probe, self.cfg.knn) if p is not None]
        self.kinds = {k for part in parts for k in kinds(part.features)}
        self.knn = instantiate(self.cfg.knn, _convert_="all") if self.cfg.knn is not None else None
        self.probe = None
        if (p := self.cfg.online_probe) is not None:
            dims = {k: v.shape[1] for k, v in self._features(self.test_x[:2]).items()}
            self.probe = instantiate(p, dims=dims, classes=self.classes, total_steps=total_steps,
                                     _convert_="all").to(device)

    @classmethod
    def build(cls, cfg: DictConfig, data: InMemoryData, augment, net: nn.Module, device: torch.device,
              total_steps: int) -> "Evaluation | None":
        """None when `eval` is off, or (with a one-line notice) when the data has no labels."""
        if cfg.eval.online_probe is None and cfg.eval.knn is None:
            return None
        if cfg.eval.every < 1:
            raise ConfigError(f"eval.every={cfg.eval.every} is not allowed: use a positive number of steps.")
        if cfg.eval.batch_size < 1:
            raise ConfigError(f"eval.batch_size={cfg.eval.batch_size} is not allowed: use a positive number of "
                              f"images per forward pass, e.g. 1024.")
        if cfg.eval.online_probe is not None and data.batch_size < 2:
            raise ConfigError(f"data.batch_size={data.batch_size} is too small for eval=online_probe: it "
                              f"standardises the features by their statistics over the batch. Use "
                              f"data.batch_size>=2, or eval=knn.")
        known = data.y[data.y >= 0]
        if len(known.unique()) < 2:
            log.warning("eval: %s has no class labels (%d labelled samples, %d classes); evaluation skipped.",
                        data.name, len(known), len(known.unique()))
            return None
        return cls(cfg, data, held_out(cfg), augment.clean, net, device, total_steps)

    def _features(self, x: Tensor, kinds: set[str] | None = None) -> dict[str, Tensor]:
        """The features of x of `kinds` (default: every kind a probe reads), and h always."""
        projector = "projector" in (self.kinds if kinds is None else kinds)
        return extract(self.net, x, self.clean, self.cfg.batch_size, self.device, projector)

    def after_step(self, step: int, out: StepOutput, x: Tensor, y: Tensor) -> dict[str, float]:
        """Train the probe on the features of this step's batch x (the whole global batch)
        or, with `input=view`, on its view-1 features h1 / z1 (with labels y[:n]: a
        gathered batch starts with rank 0's slice); after every `eval.every`-th step (and
        the last) return the held-out accuracies, else {}."""
        if self.probe is not None:
            if self.probe.input == "view":
                features = {"backbone": out.h1, "projector": out.z1}
            else:
                features = self._features(x, set(self.probe.heads))  # every step: only what the probe reads
            self.probe.train_step({k: features[k] for k in self.probe.heads}, y)
        if (step + 1) % self.cfg.every and step + 1 != self.steps:
            return {}
        return self.evaluate()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Top-1 and top-5 accuracy (%) on the held-out split: `eval/probe/<kind>/top1`, …,
        `eval/knn<k>/<kind>/top1`, …"""
        test = self._features(self.test_x)
        metrics: dict[str, float] = {}
        if self.probe is not None:
            for kind, scores in self.probe.scores(test).items():
                metrics.update(_named(f"eval/probe/{kind}", topk_accuracy(scores, self.test_y)))
        if self.knn is not None:
            metrics.update(self.knn(self._features(self.bank_x), self.bank_y, test, self.test_y, self.classes))
        return metrics

    def state_dict(self) -> dict:
        return {"probe": self.probe.state_dict() if self.probe is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.probe is not None:
            self.probe.load_state_dict(state["probe"])


def _named(prefix: str, accuracy: dict[int, float]) -> dict[str, float]:
    return {f"{prefix}/top{k}": v for k, v in accuracy.items()}
