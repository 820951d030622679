"""Training FLOPs: achieved GFLOP/s of the MiniLM step vs this machine's fp32 matmul GFLOP/s.

Both in one worker subprocess with the same thread count, alternating ``rounds`` times:

* peak: ``torch.mm`` of two 2048 x 2048 fp32 matrices (2 * 2048^3 FLOPs), median time of 10 calls after
  3 warm-up calls;
* MiniLM: headstart's full fine-tuning step on real length-grouped SST-2 training batches (batch 32, max
  length 64, dynamic padding): ``training_step`` forward + loss, backward, grad-norm clipping, fused
  AdamW step, zero_grad. Lightning's loop is left out (``bench_trainer.py`` measures the whole loop). The
  FLOPs of each batch's forward + backward are counted once with ``torch.utils.flop_counter.FlopCounterMode``
  (matmul-like ops: mm, addmm, bmm, attention), so both figures count the same kind of work; GFLOP/s =
  counted FLOPs of the timed steps / their wall time.

Run from the repo root:  python benchmarks/bench_flops.py [--quick] [--rounds 3]
Writes benchmarks/results/training_flops.json (``--quick``: training_flops_quick.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # as a script or as benchmarks.bench_flops
from _common import (
    DEFAULT_THREADS,
    RESULTS,
    ROOT,
    command_line,
    data_available,
    emit,
    fmt,
    machine_info,
    run_worker,
    set_threads,
    skip_message,
    write_json,
)

CONFIG = "benchmarks/configs/text_throughput_sst2.yaml"
SCRIPT = "benchmarks/bench_flops.py"
FULL = {"rounds": 3, "steps": 12, "warmup": 3, "train_subset": 2000}
QUICK = {"rounds": 1, "steps": 3, "warmup": 1, "train_subset": 256}


def run(quick: bool = False, rounds: int | None = None, threads: int = DEFAULT_THREADS,
        verbose: bool = True) -> dict[str, Any]:
    if not data_available():
        return {"benchmark": "training_flops", "skipped": skip_message()}
    s = dict(QUICK if quick else FULL)
    if rounds is not None:
        s["rounds"] = rounds
    cmd = [sys.executable, SCRIPT, "--worker", "--threads", str(threads), *[
        a for k in ("rounds", "steps", "warmup", "train_subset") for a in (f"--{k.replace('_', '-')}", str(s[k]))]]
    out = run_worker(cmd, threads, 1800.0)
    result = {"benchmark": "training_flops", "quick": quick, "settings": s, "command": command_line(cmd),
              "machine": machine_info(threads), **out}
    if verbose and "error" not in out:
        print(f"matmul {out['matmul_gflops']:.1f} GFLOP/s, MiniLM step {out['step_gflops']:.1f} GFLOP/s "
              f"({100 * out['fraction_of_matmul']:.0f} %)", flush=True)
    return result


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from headstart.config import load_config, parse_override
    from headstart.data import load_text_splits
    from headstart.experiments.build import build_model
    from headstart.modalities.text import build_text_loaders

    set_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(ROOT / CONFIG, [parse_override(f"data.train_subset={args.train_subset}")])
    d = cfg.data
    splits = load_text_splits(train=d.train, val=d.val, test=None, text_column=d.text_column, label_column=d.label_column,
                              train_subset=d.train_subset, seed=cfg.trainer.seed)
    model = build_model(cfg, splits.label_map.n_classes, verbose=False)
    model.trainable_blocks = frozenset(range(len(model.block_names)))  # full: no Lightning hook here
    model._apply_requires_grad()
    model.train()
    loaders = build_text_loaders(cfg, {"train": splits.train}, model.backbone.load_tokenizer())
    n_batches = args.warmup + args.steps
    batches = [b for _, b in zip(range(n_batches), loaders["train"], strict=False)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, fused=True)

    def step(batch: dict[str, Any]) -> None:
        loss = model.training_step(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    flops = []
    for batch in batches:
        with FlopCounterMode(display=False) as counter:
            loss = model.training_step(batch, 0)
            loss.backward()
        opt.zero_grad(set_to_none=True)
        flops.append(counter.get_total_flops())

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    mm_flops = 2 * 2048**3
    rounds = []
    for _ in range(args.rounds):
        for _ in range(3):
            torch.mm(a, b)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t0)
        mm = mm_flops / statistics.median(times) / 1e9
        for batch in batches[: args.warmup]:
            step(batch)
        t0 = time.perf_counter()
        for batch in batches[args.warmup:]:
            step(batch)
        elapsed = time.perf_counter() - t0
        gf = sum(flops[args.warmup:]) / elapsed / 1e9
        rounds.append({"matmul_gflops": round(mm, 2), "step_gflops": round(gf, 2),
                       "step_ms": round(1000 * elapsed / args.steps, 1)})
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    tokens = [int(b["input_ids"].numel()) for b in batches[args.warmup:]]
    return {
        "rounds": rounds, **med, "fraction_of_matmul": med["step_gflops"] / med["matmul_gflops"],
        "gflop_per_step_mean": sum(flops[args.warmup:]) / args.steps / 1e9,
        "padded_tokens_per_batch_mean": sum(tokens) / len(tokens), "threads": torch.get_num_threads(),
        "counted_ops": "matmul-like (mm, addmm, bmm, scaled_dot_product_attention) forward + backward",
    }


def to_markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return result["skipped"]
    if "error" in result:
        return f"### Training GFLOP/s\n\nfailed: {result['error']}"
    return "\n".join([
        "### Training GFLOP/s", "",
        f"MiniLM full fine-tuning step (batch 32, length-grouped SST-2, mean "
        f"{result['padded_tokens_per_batch_mean']:.0f} padded tokens per batch, "
        f"{result['gflop_per_step_mean']:.1f} GFLOP counted per step) vs fp32 2048x2048 matmul, "
        f"{result['threads']} threads, medians of {len(result['rounds'])} alternating rounds:", "",
        "| measurement | GFLOP/s | ms |", "|---|---|---|",
        f"| fp32 matmul 2048x2048 (peak) | {fmt(result['matmul_gflops'], 1)} | - |",
        f"| MiniLM train step (fwd + bwd + clip + fused AdamW) | {fmt(result['step_gflops'], 1)} | "
        f"{fmt(result['step_ms'], 0)} |",
        f"| achieved fraction of matmul peak | {fmt(100 * result['fraction_of_matmul'], 0)} % | - |", ""])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=FULL["steps"], help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=FULL["warmup"], help=argparse.SUPPRESS)
    p.add_argument("--train-subset", type=int, default=FULL["train_subset"], help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        args.rounds = args.rounds or FULL["rounds"]
        emit(worker(args))
        return 0
    if not data_available():
        print(skip_message())
        return 0
    result = run(quick=args.quick, rounds=args.rounds, threads=args.threads)
    out_path = args.out or RESULTS / f"training_flops{'_quick' if args.quick else ''}.json"
    write_json(out_path, result)
    print(to_markdown(result))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
