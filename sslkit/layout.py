"""The run directory's files, each named once here:

    config.yaml         the resolved config                    sslkit.run.save_run_info
    env.json            versions, devices, host, git commit    sslkit.run.save_run_info
    metrics.jsonl       one JSON line per logged step          sslkit.records.MetricsFile
    checkpoints/        step_<N>.pt and last.pt                sslkit.checkpoint
    spectrum/           eigenvalue tables and events.jsonl     sslkit.spectrum
    spectrum/full/      complete spectra every full_every      sslkit.spectrum.SpectrumMonitor
    theory/             modes.json, curves.npz, .hydra/        sslkit.theory.predict (sslkit-theory)
    eval/               sslkit-eval's feature caches           sslkit.eval.offline
    linear_eval.json    sslkit-eval's result                   sslkit.eval.offline
    stepwise.png, .pdf  the figure (.pdf: sslkit-report)       sslkit.report
    tensorboard/        logger=[tensorboard]'s event files     sslkit.records.tensorboard
    wandb-run-id        the W&B run a resume continues         sslkit.records.wandb
    .lock               held by the process training in it     sslkit.runlock
"""

CONFIG = "config.yaml"
ENV = "env.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
SPECTRUM = "spectrum"
FULL_SPECTRUM = f"{SPECTRUM}/full"
EVENTS = f"{SPECTRUM}/events.jsonl"
THEORY = "theory"
EVAL_CACHE = "eval"
LINEAR_EVAL = "linear_eval.json"
FIGURE = "stepwise"
TENSORBOARD = "tensorboard"
WANDB_RUN_ID = "wandb-run-id"
LOCK = ".lock"
