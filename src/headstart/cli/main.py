"""The ``headstart`` command line: fit, compare, stack, tune, inspect, evaluate, predict, embed, cache.

Every user error surfaces as one paragraph on stderr (exit code 2), never a stack trace; set
``HEADSTART_DEBUG=1`` to see the trace anyway. A usage mistake (unknown option or command, missing
argument) prints the usage line and one ``Error:`` line, also with exit code 2.

This module imports only typer and the stdlib-only :mod:`headstart.errors` / :mod:`headstart.logsetup` at
load time: torch, Lightning, transformers, pandas and the config models load inside the command that needs
them, so ``headstart --help`` answers at once (benchmarks/cli_startup.py measures it). The help is click's
plain text (``rich_markup_mode=None``): it does not import rich, and it reads the same in a pipe.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from headstart.errors import ConfigError, HeadstartError, RunInterrupted
from headstart.logsetup import setup_logging

if TYPE_CHECKING:
    from headstart.experiments.shard import Shard

__all__ = ["app", "main", "package_version"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings=CONTEXT_SETTINGS,
                  help="Fine-tune pretrained encoders on downstream tasks.")

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML).", show_default=False, metavar="CONFIG")]


def package_version() -> str:
    """The installed distribution's version (what pip sees), else the source tree's ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("headstart")
    except PackageNotFoundError:
        from headstart import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"headstart {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    # No docstring: typer would show it instead of the app's help. --version acts in its callback.
    pass


def _parse_sets(sets: list[str] | None) -> list[tuple[list[str], object]]:
    from headstart.config import parse_override

    return [parse_override(s) for s in sets or []]


def _overrides(
    pretrain: str | None, strategy: str | None, lr: str | None, epochs: str | None, warmup_epochs: str | None,
    seed: str | None, output_dir: str | None, sets: list[str] | None,
) -> list[tuple[list[str], object]]:
    import yaml

    from headstart.strategies import parse_strategy_spec

    out: list[tuple[list[str], object]] = []
    for keys, raw in ((["pretrain"], pretrain), (["optim", "lr"], lr), (["trainer", "epochs"], epochs),
                      (["optim", "warmup_epochs"], warmup_epochs), (["trainer", "seed"], seed),
                      (["output_dir"], output_dir)):
        if raw is not None:
            value: object = raw
            if keys[0] != "output_dir" and keys != ["pretrain"]:
                try:
                    value = yaml.safe_load(raw)
                except yaml.YAMLError:  # kept as text; validation then names the option and the value
                    value = raw
            out.append((keys, value))
    if strategy is not None:
        try:
            fields = parse_strategy_spec(strategy)
        except ValueError as exc:
            raise ConfigError(f"--strategy '{strategy}' is not understood: {exc}") from None
        out.append((["strategy"], fields))
    out += _parse_sets(sets)
    return out


def _shard_option(shard: str | None, collect: bool) -> Shard | None:
    """``--shard I/N`` checked before any data or model is read (and never together with ``--collect``)."""
    if shard is None:
        return None
    if collect:
        raise ConfigError(f"--shard {shard} and --collect cannot be used together: --shard I/N trains one part of "
                          f"the grid, --collect trains nothing and writes the results once every shard has "
                          f"finished. Run each shard, then the same command with --collect instead of --shard.")
    from headstart.experiments.shard import parse_shard

    return parse_shard(shard)


@app.command()
def fit(
    ctx: typer.Context,
    config: ConfigArg,
    pretrain: Annotated[str | None, typer.Option(help="Encoder checkpoint loaded before fine-tuning.")] = None,
    strategy: Annotated[str | None, typer.Option(help="full | linear_probe | partial:K | partial:A-B | gradual[:E[:K]] "
                                                      "(bare: 1 head-only epoch, then a block per epoch) | lora[:R]")] = None,
    lr: Annotated[str | None, typer.Option(help="Head learning rate (optim.lr).")] = None,
    epochs: Annotated[str | None, typer.Option(help="trainer.epochs")] = None,
    warmup_epochs: Annotated[str | None, typer.Option("--warmup-epochs", help="optim.warmup_epochs")] = None,
    seed: Annotated[str | None, typer.Option(help="trainer.seed")] = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", help="Run directory.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Any config key: --set data.batch_size=16")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in output_dir from its last.ckpt.")] = False,
    keep_last: Annotated[bool, typer.Option("--keep-last", help="Keep checkpoints/last.ckpt (optimizer state) "
                                                                "after the run finishes; by default a finished "
                                                                "run drops it and keeps best.safetensors.")]
    = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute frozen blocks every epoch "
                                                              "(cache.enabled=false).")] = False,
    objective: Annotated[str | None, typer.Option(help="pretrain only: objective.name, supervised (fit on the "
                                                       "labels, the default), coles (event sequences), "
                                                       "attribute_masking (molecules) or mlm (masked-language "
                                                       "model on text); the last three need no labels.")]
    = None,
    classic_baseline: Annotated[bool, typer.Option("--baseline", help="fit only: also fit the modality's classic "
                                                                      "baseline (TF-IDF + logistic regression, "
                                                                      "...) on the same split: baseline.json, "
                                                                      "summary.json classic_baseline.")] = False,
) -> None:
    """Fine-tune a model as CONFIG describes and write a run directory."""
    if overwrite and resume:
        ctx.fail("--overwrite and --resume cannot be used together: --resume continues the run in output_dir "
                 "from checkpoints/last.ckpt, --overwrite deletes that run and starts again. Pick one.")
    exporting = ctx.info_name == "pretrain"  # the same command, registered twice
    if classic_baseline and exporting:
        ctx.fail("--baseline fits a classic model beside a fine-tuned run; `headstart pretrain` exports an encoder. "
                 "Use it with: headstart fit CONFIG --baseline.")
    if objective is not None and not exporting:
        ctx.fail(f"--objective {objective} chooses what `headstart pretrain` trains on; fit always trains on the "
                 f"labels. Run: headstart pretrain CONFIG --objective {objective}.")
    from headstart.config import load_config

    overrides = _overrides(pretrain, strategy, lr, epochs, warmup_epochs, seed, output_dir, sets)
    if no_cache:
        overrides.append((["cache", "enabled"], False))
    if objective is not None:
        overrides.append((["objective", "name"], objective))
    cfg = load_config(config, overrides)  # a config mistake is reported before Lightning is imported
    if exporting:
        from headstart.pretraining import run_pretrain

        result = run_pretrain(cfg, overwrite=overwrite, resume=resume, keep_last=keep_last)
    else:
        from headstart.experiments.fit import run_fit

        result = run_fit(cfg, overwrite=overwrite, resume=resume, export_pretrained=False, keep_last=keep_last,
                         classic_baseline=classic_baseline)
    if getattr(result, "rank", 0) != 0:
        return  # another process of a multi-process run: rank 0 reports
    typer.echo(f"\nRun written to {result.run_dir}")
    if exporting:
        typer.echo(f"Pretrained checkpoint: {result.summary['pretrained_export']} (use: headstart fit B.yaml "
                   f"--pretrain {result.run_dir})")


app.command(
    "pretrain",
    help="Train an encoder on dataset A as CONFIG describes and export its best weights with their architecture "
         "record (and vocabularies) as pretrained.safetensors, for `headstart fit --pretrain RUN_DIR` on dataset "
         "B. The objective (objective.name, --objective) is supervised (like fit, on the labels), coles "
         "(contrastive views of event sequences), attribute_masking (masked atom types of molecules) or mlm "
         "(masked-language-model training of a text encoder on unlabelled text: data.train's text column and "
         "objective.text_files); the last three need no labels.",
)(fit)


@app.command()
def compare(
    inputs: Annotated[list[Path], typer.Argument(help="A run config (YAML) to run as a strategies x seeds grid, "
                                                      "or finished run directories to compare.",
                                                 show_default=False)],
    strategies: Annotated[str | None, typer.Option(help="Comma-separated strategies, each with optional "
                                                        "overrides in brackets: 'linear_probe[optim.lr=1e-2],"
                                                        "partial:2,full'.")] = None,
    seeds: Annotated[str, typer.Option(help="trainer.seed of each run: 42,43,44 or 42-44.")] = "42,43,44",
    baseline: Annotated[str | None, typer.Option(help="Strategy the others are tested against (default: full "
                                                      "if listed, else the first).")] = None,
    metric: Annotated[str | None, typer.Option(help="Metric of the table and the tests (test_acc, test_f1, "
                                                    "test_rmse, val_acc...; default: the test twin of the config's "
                                                    "trainer.monitor, else test_acc).")] = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", help="Comparison directory (default: beside "
                                                                        "the config's output_dir).")] = None,
    split_seed: Annotated[int | None, typer.Option("--split-seed", help="Seed of the data split shared by every "
                                                                        "run (default: the config's).")] = None,
    workers: Annotated[int, typer.Option(help="Runs in parallel, each in its own process (0: in this process).")]
    = 1,
    threads: Annotated[int | None, typer.Option(help="Torch threads per run (default: cores / workers).")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Config override for every run.")] = None,
    group_by: Annotated[str, typer.Option("--group-by", help="Run directories: group by strategy or name.")]
    = "strategy",
    top: Annotated[int | None, typer.Option(help="With a tune directory: re-run its TOP best complete trials "
                                                 "over --seeds (default 3).", show_default=False)] = None,
    shard: Annotated[str | None, typer.Option(help="Run only shard I of N of the grid (e.g. 1/2), for machines "
                                                   "sharing the output directory; then --collect.",
                                              metavar="I/N", show_default=False)] = None,
    collect: Annotated[bool, typer.Option("--collect", help="Train nothing: once every shard has finished, write "
                                                            "results.csv, summary.md and report.html.")] = False,
    classic_baseline: Annotated[bool, typer.Option("--classic-baseline/--no-classic-baseline",
                                                   help="Also fit the modality's classic baseline (TF-IDF + logistic "
                                                        "regression, pixels + logistic regression, RFM / Morgan + "
                                                        "LightGBM) once on the grid's split and report it.")] = True,
) -> None:
    """Compare strategies over seeds on identical splits: results.csv, summary.md, plots, report.html.

    Also: compare TUNE_DIR --top K re-runs a tune's K best trials over the seeds."""
    from headstart.experiments.compare import compare_run_dirs, run_compare
    from headstart.tune.top import is_tune_dir, top_trial_cells

    part = _shard_option(shard, collect)
    configs = [p for p in inputs if p.suffix in (".yaml", ".yml") or p.is_file()]
    if len(inputs) == 1 and is_tune_dir(inputs[0]):
        if strategies:
            raise ConfigError("compare TUNE_DIR re-runs the tune's best trials; --strategies applies to a config.")
        base, cells, _ = top_trial_cells(inputs[0], top or 3)
        result = run_compare(base, cells, seeds, overrides=_parse_sets(sets),
                             output_dir=output_dir or inputs[0] / "top-compare", workers=workers,
                             threads=threads, metric=metric, baseline=baseline, shard=part, collect=collect,
                             classic_baseline=classic_baseline)
    elif top is not None:
        raise ConfigError(f"--top re-runs the best trials of a tune directory; '{inputs[0]}' is not one (it has no "
                          f"tune.json and base.yaml).")
    elif configs and len(inputs) > 1:
        raise ConfigError(f"compare takes one config (YAML) or several run directories, not both: got {len(inputs)} "
                          f"paths including {configs[0]}.")
    elif configs:
        if not strategies:
            raise ConfigError("compare CONFIG needs --strategies, e.g. --strategies linear_probe,partial:2,full.")
        result = run_compare(configs[0], strategies, seeds, overrides=_parse_sets(sets),
                             output_dir=output_dir, split_seed=split_seed, workers=workers, threads=threads,
                             metric=metric, baseline=baseline, shard=part, collect=collect,
                             classic_baseline=classic_baseline)
    else:
        if strategies or sets:
            raise ConfigError("--strategies and --set apply to a config grid; run directories are compared as "
                              "they are.")
        if part is not None or collect:
            raise ConfigError("--shard and --collect split a grid that compare runs from a config (or a tune "
                              "directory); finished run directories are compared as they are, without them.")
        result = compare_run_dirs(inputs, output_dir or "compare", metric=metric or "test_acc", baseline=baseline,
                                  group_by=group_by)
    failed = [r for r in result.rows if r.get("status") != "done"]
    if result.shard is not None:  # a part of the grid: no summary until --collect
        typer.echo(f"\n{result.message}")
        if failed:
            raise typer.Exit(1)
        return
    typer.echo(f"\n{(result.output_dir / 'summary.md').read_text(encoding='utf-8')}")
    typer.echo(f"Report: {result.files.get('report.html', result.output_dir / 'report.html')}")
    if failed:
        raise typer.Exit(1)


@app.command()
def stack(
    inputs: Annotated[list[Path], typer.Argument(help="Base configs (YAML) or finished run directories (their "
                                                      "config is reused); at least two.", show_default=False)],
    output_dir: Annotated[str, typer.Option("--output-dir", help="Stack directory (fold runs, OOF, report).")]
    = "runs/stack",
    folds: Annotated[int, typer.Option(help="Stratified folds of the training split.")] = 5,
    split_seed: Annotated[int | None, typer.Option("--split-seed", help="Seed of the data split and the folds "
                                                                        "(default: the first config's).")] = None,
    meta: Annotated[str, typer.Option(help="Meta-learner: lightgbm or logreg.")] = "lightgbm",
    workers: Annotated[int, typer.Option(help="Fold runs in parallel, each in its own process (0: in this "
                                              "process).")] = 1,
    threads: Annotated[int | None, typer.Option(help="Torch threads per run (default: cores / workers).")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Config override for every base.")] = None,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="Also give the meta-learner the first base's "
                                                                  "pretrained encoder features (cached).")] = False,
    shard: Annotated[str | None, typer.Option(help="Run only shard I of N of the fold runs (e.g. 1/2), for "
                                                   "machines sharing the output directory; then --collect.",
                                              metavar="I/N", show_default=False)] = None,
    collect: Annotated[bool, typer.Option("--collect", help="Train nothing: once every shard has finished, fit "
                                                            "the meta-learners and write stack.md.")] = False,
) -> None:
    """Out-of-fold stacking: k-fold runs of each base, a meta-learner on their held-out predictions, judged on
    the test split against the best single base and the plain average."""
    from headstart.experiments.stack import run_stack

    part = _shard_option(shard, collect)
    result = run_stack(inputs, output_dir=output_dir, folds=folds, split_seed=split_seed, meta=meta,
                       workers=workers, threads=threads, overrides=_parse_sets(sets),
                       embeddings=embeddings, shard=part, collect=collect)
    if result.shard is not None:  # a part of the fold runs: the meta-learners wait for --collect
        typer.echo(f"\n{result.message}")
        return
    typer.echo("\n" + result.files["stack.md"].read_text(encoding="utf-8"))


@app.command()
def tune(
    config: ConfigArg,
    space: Annotated[Path, typer.Option("--space", help="Search space (YAML): config keys -> distributions, with "
                                                        "conditions (examples/tune_text_space.yaml).",
                                        show_default=False)],
    n_trials: Annotated[int, typer.Option("--n-trials", help="Trials in the study in all (a rerun continues to "
                                                             "this total; several machines share it).")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Seconds after which no new trial starts.")] = None,
    metric: Annotated[str | None, typer.Option(help="Validation metric to optimise (default: trainer.monitor).")]
    = None,
    direction: Annotated[str | None, typer.Option(help="max or min (default: from the metric).")] = None,
    workers: Annotated[int, typer.Option(help="Trials in parallel, each in its own process (0: in this process).")]
    = 1,
    threads: Annotated[int | None, typer.Option(help="Torch threads per trial (default: cores / workers).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna database URL shared by several machines (default: "
                                                     "SQLite in the output directory).")] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study in the storage (default: the "
                                                                        "config's name).")] = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", help="Tune directory (default: beside the "
                                                                        "config's output_dir).")] = None,
    pruner: Annotated[str, typer.Option(help="median, halving (successive halving), hyperband or none.")]
    = "median",
    pruner_startup: Annotated[int, typer.Option("--pruner-startup", help="Median pruner: trials never pruned.")]
    = 3,
    pruner_warmup: Annotated[int, typer.Option("--pruner-warmup", help="Epochs every trial runs before it can be "
                                                                       "pruned.")] = 1,
    sampler: Annotated[str, typer.Option(help="tpe or random.")] = "tpe",
    keep_pruned_weights: Annotated[bool, typer.Option("--keep-pruned-weights", help="Keep the weights of pruned "
                                                                                    "trials.")] = False,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Config override for every trial.")] = None,
) -> None:
    """Search hyper-parameters (strategy-aware, pruned, resumable): trials/, trials.csv, best.yaml, report.html."""
    from headstart.tune import run_tune

    result = run_tune(config, space, n_trials=n_trials, timeout=timeout, metric=metric, direction=direction,
                      workers=workers, threads=threads, storage=storage, study_name=study_name,
                      output_dir=output_dir, pruner=pruner, pruner_startup=pruner_startup,
                      pruner_warmup=pruner_warmup, sampler=sampler, keep_pruned_weights=keep_pruned_weights,
                      overrides=_parse_sets(sets))
    typer.echo(f"\n{(result.output_dir / 'summary.md').read_text(encoding='utf-8')}")
    typer.echo(f"Report: {result.files['report.html']}")
    if result.best is None:
        raise typer.Exit(1)


@app.command()
def inspect(
    config: ConfigArg,
    strategy: Annotated[str | None, typer.Option(help="Strategy override, as for fit.")] = None,
    lr: Annotated[str | None, typer.Option(help="Head learning rate (optim.lr).")] = None,
    epochs: Annotated[str | None, typer.Option(help="trainer.epochs")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(
        "--steps-per-epoch", min=1, show_default=False,
        help="Optimizer steps per epoch of the LR column (default: fit's count on the config's training data, "
             "or 100 when that cannot be read).")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Any config key, as for fit.")] = None,
) -> None:
    """Print the layer map and the param-group table (group, #params, lr, weight decay, trainable)."""
    from headstart.config import load_config
    from headstart.experiments.inspect import inspect_config

    cfg = load_config(config, _overrides(None, strategy, lr, epochs, None, None, None, sets))
    typer.echo(inspect_config(cfg, steps_per_epoch))


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    data: Annotated[Path, typer.Option(help="Labelled file with the run's columns (or images: idx, npz, Parquet, "
                                            "folder). With --ood: the in-distribution set, labels optional.")],
    output: Annotated[Path | None, typer.Option(help="Also write the metrics as JSON.")] = None,
    ood: Annotated[Path | None, typer.Option(
        "--ood", help="Out-of-distribution file read like --data (labels ignored): report AUROC, AUPR (OOD and ID "
                      "positive) and FPR at 95% TPR of the MSP, max-logit, energy and Mahalanobis scores, with ROC / "
                      "PR plots, in RUN_DIR/ood (or --out).")] = None,
    temperature: Annotated[float | None, typer.Option(
        "--temperature", help="With --ood: temperature of the energy score.  [default: 1.0]",
        show_default=False)] = None,
    ridge: Annotated[float | None, typer.Option(
        "--ridge", help="With --ood: ridge added to the Mahalanobis tied covariance (e.g. 1e-3 when the training "
                        "split has fewer rows than features).  [default: 0]", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="With --ood: folder of ood.json, ood.md, scores.npz and plots/.  [default: RUN_DIR/ood]",
        show_default=False)] = None,
) -> None:
    """Metrics of a run's best weights on a labelled file; with --ood, out-of-distribution detection."""
    import json

    if ood is None:
        given = [name for name, value in (("--temperature", temperature), ("--ridge", ridge), ("--out", out))
                 if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --ood (out-of-distribution detection); add "
                              f"--ood OOD_FILE or drop {'them' if len(given) > 1 else 'it'}.")
    else:
        from headstart.experiments.ood_eval import evaluate_ood, format_ood_table

        report = evaluate_ood(run_dir, data, ood, temperature=1.0 if temperature is None else temperature,
                              out_dir=out, ridge=0.0 if ridge is None else ridge)
        m = report["mahalanobis"]
        typer.echo(f"OOD detection: ID {data} ({report['n_id']} rows) vs OOD {ood} ({report['n_ood']} rows); "
                   f"higher score = more ID; energy T={report['temperature']:g}; Mahalanobis fitted on "
                   f"{m['n_train']} training rows ({m['features'].replace('_', ' ')} features, {m['feature_dim']} "
                   f"dims)\n")
        typer.echo(format_ood_table(report["metrics"]))
        typer.echo(f"\nWritten to {Path(report['files']['ood.json']).parent}: ood.json, ood.md, scores.npz, "
                   f"plots/ood_roc.png, plots/ood_pr.png")
        if output is not None:
            from headstart.fileio import write_json

            write_json(output, report)
        return

    from headstart.experiments.inference import evaluate_file

    metrics = evaluate_file(run_dir, data)
    text = json.dumps(metrics, indent=2)
    typer.echo(text)
    if output is not None:
        from headstart.fileio import atomic_write_text

        atomic_write_text(output, text)


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    data: Annotated[Path, typer.Option(help="File with the run's text column(s), or images like its training data.")],
    output: Annotated[Path, typer.Option(help="Predictions CSV.")] = Path("predictions.csv"),
) -> None:
    """Predicted label and class probabilities for every row (CSV)."""
    from headstart.experiments.inference import predict_file

    frame = predict_file(run_dir, data)
    output.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output, index=False)
    typer.echo(f"{len(frame)} predictions written to {output}")


@app.command()
def embed(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    data: Annotated[Path, typer.Option(help="File with the run's text column(s), or images like its training data.")],
    output: Annotated[Path, typer.Option(help="Embeddings Parquet file.")] = Path("embeddings.parquet"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the feature cache.")] = False,
) -> None:
    """Backbone embeddings of every row (Parquet, one list column ``embedding``).

    They go through the feature cache: embedding the same file with the same weights again (or
    after a linear probe on it) reads them from disk.
    """
    from headstart.experiments.inference import embed_file

    frame = embed_file(run_dir, data, use_cache=not no_cache)
    output.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(output, index=False)
    dim = len(frame["embedding"].iloc[0]) if len(frame) else 0
    typer.echo(f"{len(frame)} embeddings of size {dim} written to {output}")


cache_app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT_SETTINGS,
                        help="The feature cache of frozen encoder outputs.")
app.add_typer(cache_app, name="cache")
CacheDir = Annotated[str | None, typer.Option("--dir", help="Cache directory (default: $HEADSTART_CACHE_DIR or "
                                                           "~/.cache/headstart/features).")]


@cache_app.command("ls")
def cache_ls(cache_dir: CacheDir = None) -> None:
    """List cache entries: key, kind, cut, rows, dtype, size, created, last used."""
    from headstart.cache import FeatureCache, format_bytes

    cache = FeatureCache(cache_dir)
    rows = list(cache.entries())
    if not rows:
        typer.echo(f"No feature cache entries in {cache.root}.")
        return
    header = f"{'key':<24}  {'kind':<6}  {'cut':>5}  {'rows':>8}  {'dtype':<7}  {'size':>9}  {'created':<19}  last used"
    typer.echo(header)
    for e in rows:
        cut = f"{e['cut']}/{e['n_blocks']}"
        typer.echo(f"{e['key']:<24}  {e['kind']:<6}  {cut:>5}  {e['rows']:>8}  {e['dtype']:<7}  "
                   f"{format_bytes(e['bytes']):>9}  {e['created']:<19}  {e['last_used']}")
    total = sum(e["bytes"] for e in rows)
    typer.echo(f"{len(rows)} entries, {format_bytes(total)} in {cache.root}")


@cache_app.command("clear")
def cache_clear(
    keys: Annotated[list[str] | None, typer.Argument(help="Entries to delete (default: all).")] = None,
    older_than: Annotated[float | None, typer.Option("--older-than", help="Only entries unused for this many "
                                                                          "days.")] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Delete cache entries (all, the KEYS given, or those unused for --older-than days)."""
    from headstart.cache import FeatureCache, format_bytes

    cache = FeatureCache(cache_dir)
    removed, freed = cache.clear(keys or None, older_than)
    typer.echo(f"Removed {removed} entries ({format_bytes(freed)}) from {cache.root}.")


def _click_exception() -> type[Exception]:
    """The ClickException class of the click that typer runs on: typer >= 0.2x vendors its own (typer._click),
    older typer re-exports click's. Found through the public ``typer.BadParameter``, so either works."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors become one clear paragraph and exit code 2, usage mistakes the usage
    line and one ``Error:`` line (exit code 2), interrupted runs exit code 130 / 143; never a traceback."""
    setup_logging()
    click_exception = _click_exception()
    try:
        # standalone_mode=False: typer raises usage errors to us instead of exiting, and returns the code of
        # typer.Exit (--help, --version: 0; a Ctrl-C that typer caught in a command: 130).
        code = app(args=argv, prog_name="headstart", standalone_mode=False)
    except RunInterrupted as exc:
        if os.environ.get("HEADSTART_DEBUG"):
            raise
        typer.echo(f"interrupted: {exc}", err=True)
        return exc.exit_code
    except HeadstartError as exc:
        if os.environ.get("HEADSTART_DEBUG"):
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:  # a Ctrl-C before typer runs the command
        typer.echo("interrupted", err=True)
        return 130
    except click_exception as exc:  # usage errors (exit code 2), no-args help, bad file arguments
        exc.show()  # type: ignore[attr-defined]
        return int(exc.exit_code)  # type: ignore[attr-defined]
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        return 1
    if code == 130:  # typer turns a Ctrl-C outside a training loop into Exit(130)
        typer.echo("interrupted", err=True)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
