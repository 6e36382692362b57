"""Command-line entry points: `sslkit-train`, `sslkit-theory` (Hydra) and `sslkit-report`."""

import argparse
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sslkit.config import register_configs
from sslkit.errors import ConfigError, Preempted

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def _config_error(exc: BaseException | None) -> ConfigError | None:
    """The ConfigError behind `exc`, also when Hydra's instantiate wrapped it."""
    while exc is not None and not isinstance(exc, ConfigError):
        exc = exc.__cause__
    return exc


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _train(cfg: DictConfig) -> None:
    from sslkit.report import stepwise_figure
    from sslkit.train import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        train(cfg, run_dir)
    except Preempted as exc:
        print(f"sslkit-train: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if (error := _config_error(exc)) is None:
            raise
        print(f"sslkit-train: error: {error}", file=sys.stderr)
        sys.exit(2)
    if cfg.trainer.report and cfg.spectrum.enabled:
        print(f"figure: {stepwise_figure(run_dir)}")
    print(f"run directory: {run_dir}")


def train_main() -> None:
    register_configs()
    _train()


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _theory(cfg: DictConfig) -> None:
    from sslkit.theory.predict import predict

    try:
        out = predict(cfg, HydraConfig.get().runtime.output_dir)
    except Exception as exc:
        if (error := _config_error(exc)) is None:
            raise
        print(f"sslkit-theory: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"prediction: {out}")


def theory_main() -> None:
    """`sslkit-theory <the training overrides> hydra.run.dir=RUN_DIR`: writes RUN_DIR/theory/."""
    register_configs()
    _theory()


def report_main(argv: list[str] | None = None) -> None:
    from sslkit.report import compare_figure, stepwise_figure, theory_table

    parser = argparse.ArgumentParser(
        prog="sslkit-report",
        description="Write RUN_DIR/stepwise.png and .pdf for each run; with several runs, also "
                    "a figure that overlays them (--out).")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories written by sslkit-train")
    parser.add_argument("--out", type=Path, default=None,
                        help="comparison figure OUT.png / OUT.pdf (default: compare in the runs' "
                             "common parent directory)")
    args = parser.parse_args(argv)
    try:
        for run_dir in args.run_dirs:
            print(stepwise_figure(run_dir))
            if (table := theory_table(run_dir)) is not None:
                print(table)
        if len(args.run_dirs) > 1:
            out = args.out or Path(os.path.commonpath([d.resolve() for d in args.run_dirs])) / "compare"
            print(compare_figure(args.run_dirs, out))
    except FileNotFoundError as exc:
        parser.exit(2, f"sslkit-report: error: {exc}\n")
