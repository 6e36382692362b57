"""`sslkit-eval RUN_DIR_OR_CHECKPOINT`: offline linear evaluation of a saved model.

The checkpoint's backbone (and projector) is frozen; the features of the training data's
labelled samples and of the held-out split (`eval.test_split`, default `test`) are
computed once, in eval mode, and cached in RUN_DIR/eval/; a linear classifier
(sslkit.eval.LinearProbe) is trained on the cache with full-batch L-BFGS (default) or
SGD, and its top-1 / top-5 accuracy on the held-out split is printed and written to
RUN_DIR/linear_eval.json. `--augment K` adds K augmented copies of the training set, also
computed once: `--augment-kind standard` (random resized crop, scale 0.08–1, and
horizontal flip: the standard linear-evaluation augmentation of natural images) or
`views` (the run's own view-1 augmentation: the inputs the online probe trained on).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sslkit import checkpoint, layout
from sslkit.augment import ImageViews, ViewSpec
from sslkit.errors import ConfigError
from sslkit.eval.evaluation import classes_of, held_out
from sslkit.eval.features import extract, labelled
from sslkit.eval.knn import topk_accuracy
from sslkit.eval.probe import WEIGHT_DECAY, OnlineProbe, fit_linear
from sslkit.optim import Schedule
from sslkit.rng import LINEAR_EVAL, generator


def find_checkpoint(path: Path) -> tuple[Path, Path]:
    """(checkpoint file, run directory) for a run directory or a checkpoint file."""
    if path.is_dir():
        ckpt = path / layout.CHECKPOINTS / checkpoint.LAST
        if not ckpt.is_file() and (path / layout.CONFIG).is_file():
            every = OmegaConf.load(path / layout.CONFIG).trainer.checkpoint_every
            raise ConfigError(f"{path} is a run of sslkit-train without a checkpoint yet: it writes "
                              f"checkpoints/last.pt every trainer.checkpoint_every={every} steps and at its end. "
                              f"Evaluate it once it has written one.")
        if not ckpt.is_file():
            raise ConfigError(f"{path} holds no checkpoints/last.pt: pass a run directory written by "
                              f"sslkit-train, or a checkpoint file.")
        return ckpt, path
    if not path.is_file():
        raise ConfigError(f"{path} is neither a run directory nor a checkpoint file.")
    return path, path.parent.parent if path.parent.name == layout.CHECKPOINTS else path.parent


def load_model(ckpt: Path, device: torch.device):
    """(config, data, augment, network, step) of a checkpoint, the network frozen."""
    state = checkpoint.load(ckpt, device)
    cfg = OmegaConf.create(state["config"])
    data = instantiate(cfg.data)
    augment = instantiate(cfg.augment)
    backbone = instantiate(cfg.backbone, in_shape=augment.view_shape(tuple(data.x.shape[1:])))
    projector = instantiate(cfg.projector, in_dim=backbone.out_dim)
    net = instantiate(cfg.method, backbone=backbone, projector=projector)
    net.load_state_dict(state["model"])
    return cfg, data, augment, net.to(device).requires_grad_(False), state["step"]


def standard_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random resized crop (scale 0.08–1, ratio ¾–4⁄3) and horizontal flip, as floats in [0, 1]."""
    spec = ViewSpec(crop_scale=(0.08, 1.0), jitter_p=0.0, grayscale_p=0.0)
    return ImageViews(spec)(x, g)[0]


def features(ckpt: Path, run_dir: Path, kind: str, augment_copies: int, device: torch.device,
             batch_size: int, seed: int = 0, augment_kind: str = "standard") -> dict:
    """The feature cache of `ckpt`: train / test features and labels, and `augment_copies`
    copies of the training features augmented as `augment_kind` says; computed on the
    first call."""
    aug = f"{augment_kind}{augment_copies}" if augment_copies else "0"
    name = checkpoint.step_file(ckpt).resolve().stem  # last.pt: the step it links to, not an older one's cache
    cache = run_dir / layout.EVAL_CACHE / f"features-{name}-{kind}-aug{aug}-seed{seed}.pt"
    if cache.is_file():
        return torch.load(cache, map_location=device, weights_only=True)
    cfg, data, augment, net, step = load_model(ckpt, device)
    x, y = labelled(data.x, data.y)
    if len(y.unique()) < 2:
        raise ConfigError(f"{ckpt} was trained on {data.name} ({cfg.data._target_}), which has no class labels: "
                          f"sslkit-eval measures a linear classifier's accuracy, so there is nothing to evaluate. "
                          f"sslkit-report {run_dir} draws the run's spectra and metrics.")
    try:
        test = held_out(cfg)
    except ConfigError as exc:  # its message names the training's keys, which sslkit-eval cannot set
        raise ConfigError(f"{ckpt} was trained on {data.name} ({cfg.data._target_}), which has no held-out split "
                          f"(no data.split), and without eval.test_root: sslkit-eval has no held-out samples to "
                          f"measure on. Train with eval.test_root=DIR (the held-out images) to evaluate such a "
                          f"run.") from exc

    def get(images: torch.Tensor, clean, progress: str) -> torch.Tensor:
        return extract(net, images, clean, batch_size, device, kind == "projector", progress)[kind]

    train_x = [get(x, augment.clean, "training features")]
    for copy in range(augment_copies):
        g = generator(device, seed, LINEAR_EVAL, copy)
        progress = f"augmented copy {copy + 1}/{augment_copies}"
        if augment_kind == "views":  # view 1 of the run's own augmentation, already normalised
            train_x.append(get(x, lambda chunk: augment(chunk, g)[0], progress))
        else:
            train_x.append(get(x, lambda chunk: augment.clean(standard_augment(chunk, g)), progress))
    out = {"step": step, "train_x": torch.cat(train_x), "train_y": y.to(device).repeat(1 + augment_copies),
           "test_x": get(test.x, augment.clean, "held-out features"), "test_y": test.y.to(device)}
    cache.parent.mkdir(exist_ok=True)
    checkpoint.write_atomically(out, cache)  # a Ctrl-C while writing leaves no truncated cache
    return out


def fit_sgd(x: torch.Tensor, y: torch.Tensor, classes: int, epochs: int, batch_size: int, lr: float,
            weight_decay: float, seed: int) -> OnlineProbe:
    """SGD (momentum 0.9, cosine schedule, one step per mini-batch, on that mini-batch
    alone) over shuffled mini-batches of the cache."""
    batches = max(1, len(x) // batch_size)
    probe = OnlineProbe({"x": x.shape[1]}, classes, epochs * batches, lr=lr, momentum=0.9,
                        weight_decay=weight_decay, schedule=Schedule.cosine, steps_per_batch=1,
                        window=1).to(x.device)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator(x.device, seed, LINEAR_EVAL, epoch), device=x.device)
        for idx in order[: batches * batch_size].view(batches, -1):
            probe.train_step({"x": x[idx]}, y[idx])
    return probe


def _at_least(kind: type, low: float, strict: bool = False):
    """An argparse type: `kind`(text), refused (one line naming the option) below `low`, or
    at `low` when `strict`."""
    def parse(text: str):
        value = kind(text)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text} is not allowed: use a number {'>' if strict else '>='} {low}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type when kind(text) fails: "invalid int value"
    return parse


def _device(text: str) -> torch.device:
    """An argparse type: a device torch knows and this machine has."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text}: not a device: use cpu or cuda (cuda:N for the N-th GPU)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA devices, "
                                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sslkit-eval", description=__doc__.split("\n\n")[1])
    parser.add_argument("path", type=Path, help="a run directory (its checkpoints/last.pt) or a checkpoint file")
    parser.add_argument("--features", choices=["backbone", "projector"], default="backbone")
    parser.add_argument("--optimizer", choices=["lbfgs", "sgd"], default="lbfgs")
    parser.add_argument("--weight-decay", type=_at_least(float, 0), default=WEIGHT_DECAY,
                        help="λ of the penalty λ/2·‖W‖² (the online probe's default too)")
    parser.add_argument("--augment", type=_at_least(int, 0), default=0, metavar="K",
                        help="K augmented copies of the training set")
    parser.add_argument("--augment-kind", choices=["standard", "views"], default="standard",
                        help="standard: random resized crop + flip (images); views: the run's view 1")
    parser.add_argument("--epochs", type=_at_least(int, 1), default=100, help="SGD epochs over the cache")
    parser.add_argument("--lr", type=_at_least(float, 0, strict=True), default=1.0,
                        help="SGD learning rate on standardised features (annealed to 0 by the cosine "
                             "schedule, so a larger one than the online probe's constant 0.3)")
    parser.add_argument("--batch-size", type=_at_least(int, 1), default=256, help="SGD batch; also images per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="SGD batch order and the augmentation")
    parser.add_argument("--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the features are computed and the classifier trained (default: cuda if present)")
    args = parser.parse_args(argv)
    try:
        evaluate(args)
    except ConfigError as exc:
        parser.exit(2, f"sslkit-eval: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, "sslkit-eval: interrupted (Ctrl-C); the feature cache keeps only what was complete "
                         "(checkpoint.write_atomically), and the same command continues from it.\n")


def evaluate(args: argparse.Namespace) -> None:
    """Features (from the cache when there), the classifier, the accuracies: printed and
    written to RUN_DIR/linear_eval.json."""
    ckpt, run_dir = find_checkpoint(args.path)
    f = features(ckpt, run_dir, args.features, args.augment, args.device, args.batch_size, args.seed,
                 args.augment_kind)
    classes = classes_of(f["train_y"], f["test_y"])
    if args.optimizer == "lbfgs":
        probe = fit_linear(f["train_x"], f["train_y"], classes, args.weight_decay)
        scores = probe.eval()(f["test_x"]).detach()
    else:
        probe = fit_sgd(f["train_x"], f["train_y"], classes, args.epochs, args.batch_size, args.lr,
                        args.weight_decay, args.seed)
        scores = probe.scores({"x": f["test_x"]})["x"]
    accuracy = topk_accuracy(scores, f["test_y"])
    result = {"checkpoint": str(ckpt), "step": f["step"], "features": args.features, "optimizer": args.optimizer,
              "weight_decay": args.weight_decay, "augment": args.augment, "augment_kind": args.augment_kind,
              "train_samples": len(f["train_y"]), "test_samples": len(f["test_y"]), "top1": accuracy[1],
              "top5": accuracy[5]}
    (run_dir / layout.LINEAR_EVAL).write_text(json.dumps(result, indent=2) + "\n")
    print(f"step {f['step']}: top-1 {accuracy[1]:.2f} %, top-5 {accuracy[5]:.2f} % "
          f"({len(f['test_y'])} held-out samples) → {run_dir / layout.LINEAR_EVAL}", file=sys.stdout)


if __name__ == "__main__":
    main()
