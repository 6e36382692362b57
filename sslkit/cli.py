"""Command-line entry points: `sslkit-train` (Hydra) and `sslkit-report`."""

import argparse
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sslkit.config import register_configs

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def _train(cfg: DictConfig) -> float:
    from sslkit.report import stepwise_figure
    from sslkit.train import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    last = train(cfg, run_dir)
    if cfg.trainer.report and cfg.spectrum.enabled:
        print(f"figure: {stepwise_figure(run_dir)}")
    print(f"run directory: {run_dir}")
    return last.get("loss", float("nan"))


def train_main() -> None:
    register_configs()
    _train()


def report_main(argv: list[str] | None = None) -> None:
    from sslkit.report import stepwise_figure

    parser = argparse.ArgumentParser(prog="sslkit-report", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories written by sslkit-train")
    for run_dir in parser.parse_args(argv).run_dirs:
        print(stepwise_figure(run_dir))
