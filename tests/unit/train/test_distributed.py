"""headstart.train.distributed: rank pieces of global batches, evaluation outputs gathered once per row, rank
detection through Lightning, the checks that ranks agree; the feature cache's one-builder lock; resuming with
another process count; compare / stack / tune refusing multi-process configs."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from headstart.data import EpochShuffleSampler, LengthGroupedBatchSampler, LengthSortedSampler
from headstart.train.distributed import ShardedBatchSampler, gather_eval, process_world, shard_loader


@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_pieces_cover_each_global_batch_once(world: int) -> None:
    batches = BatchSampler(EpochShuffleSampler(23, seed=5), batch_size=8, drop_last=False)
    global_batches = list(batches)
    pieces = [list(ShardedBatchSampler(batches, r, world)) for r in range(world)]
    assert all(len(p) == len(global_batches) for p in pieces)  # every rank takes the same number of steps
    for k, batch in enumerate(global_batches):
        joined = [i for r in range(world) for i in pieces[r][k]]
        if len(batch) >= world:
            assert joined == batch  # contiguous pieces, in the global order, nothing repeated
        else:
            assert set(joined) == set(batch) and all(pieces[r][k] for r in range(world))  # padded with row 0


def test_pieces_follow_the_epoch_and_the_length_grouping() -> None:
    lengths = torch.randint(1, 60, (40,)).tolist()
    grouped = LengthGroupedBatchSampler(lengths, batch_size=8, seed=3, mega_batch_mult=2)
    ranks = [ShardedBatchSampler(grouped, r, 2) for r in range(2)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)  # what Lightning does through .sampler
        assert ranks[0].sampler is grouped.sampler and grouped.epoch == epoch
        expected = grouped.batches()
        got = [a + b for a, b in zip(*(list(s) for s in ranks), strict=True)]
        assert got == expected


def test_shard_loader_keeps_the_dataset_and_collate() -> None:
    data = TensorDataset(torch.arange(10).float())
    loader = DataLoader(data, batch_size=4, sampler=LengthSortedSampler(list(range(10))), collate_fn=lambda b: b)
    sharded = shard_loader(loader, 1, 2)
    assert sharded.dataset is data and sharded.collate_fn is loader.collate_fn
    rows = [int(x[0]) for batch in sharded for x in batch]
    assert rows == sharded.batch_sampler.yielded == [7, 6, 3, 2, 0]  # longest first, rank 1's halves


def _gather_worker(rank: int, world: int, port: int, queue: mp.Queue) -> None:
    import pytorch_lightning as pl

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n = 7
        loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=3, sampler=SequentialSampler(range(n)))
        sharded = shard_loader(loader, rank, world)
        logits, labels = [], []
        for (x,) in sharded:  # a rank's outputs: the row number itself, so the test can check the order
            logits.append(x.float()[:, None].repeat(1, 2))
            labels.append(x * 10)

        class _T:  # the two attributes gather_eval reads from a Trainer
            world_size = world

        out = gather_eval(_T(), sharded, [torch.cat(logits), torch.cat(labels), None])
        queue.put((rank, out[0][:, 0].tolist(), out[1].tolist(), out[2]))
    finally:
        torch.distributed.destroy_process_group()
    del pl


def test_gather_eval_returns_every_row_once_in_row_order() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29_500 + os.getpid() % 1000
    procs = [ctx.Process(target=_gather_worker, args=(r, 3, port, queue)) for r in range(3)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    # 7 rows in batches of 3, 3, 1 over 3 ranks: the last batch pads two ranks with row 6 again
    for rank, logits, labels, none in results:
        assert logits == [0, 1, 2, 3, 4, 5, 6], rank
        assert labels == [0, 10, 20, 30, 40, 50, 60]
        assert none is None


def test_process_world_reads_lightnings_environment(monkeypatch) -> None:
    kwargs = {"accelerator": "cpu", "devices": 2, "num_nodes": 1, "strategy": "auto", "precision": "32-true"}
    for var in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    assert process_world(kwargs) == (0, 2, 2)  # the launching process, before its children exist
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's launcher gives the child it starts
    monkeypatch.setenv("NODE_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert process_world(kwargs) == (1, 2, 2)
    monkeypatch.delenv("LOCAL_RANK")
    assert process_world({**kwargs, "devices": 1}) == (0, 1, 1)


# ----- the feature cache's build lock ---------------------------------------------------------------------------
def _build_in_process(root: str, log: str) -> None:
    import numpy as np

    from headstart.cache import FeatureCache

    cache = FeatureCache(root)

    def fill(writer) -> None:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough that the other process arrives while this one builds
        writer.write_rows(np.arange(4), np.ones((4, 3), dtype=np.float32))

    if cache.open("k" * 16) is None:
        with cache.building("k" * 16):
            if cache.open("k" * 16) is None:
                cache.build("k" * 16, {"kind": "pooled"}, rows=4, dim=3, dtype="float32", lengths=None, fill=fill)


def test_two_processes_build_a_missing_entry_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    log = tmp_path / "builds.txt"
    procs = [ctx.Process(target=_build_in_process, args=(str(tmp_path / "cache"), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert len(log.read_text().split()) == 1
    from headstart.cache import FeatureCache

    assert FeatureCache(tmp_path / "cache").open("k" * 16) is not None


# ----- resume with another process count; multi-process configs where each run is one process ------------------
def test_resume_with_another_process_count_continues(tmp_path: Path, tiny_hf_dir: Path) -> None:
    from conftest import tiny_run_config
    from headstart.config import load_config
    from headstart.experiments.fit import run_fit
    from headstart.train.callbacks import AtomicCheckpointIO

    raw = tiny_run_config(tmp_path, tiny_hf_dir, trainer={"epochs": 1, "seed": 0, "progress_bar": False,
                                                          "threads": 1})
    run_fit(load_config(None, raw=raw), verbose=False, keep_last=True)
    last = Path(raw["output_dir"]) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    ckpt["headstart"]["world_size"] = 2  # as if two processes had trained the first epoch
    AtomicCheckpointIO().save_checkpoint(ckpt, last)  # with its digest, as training writes it
    raw["trainer"]["epochs"] = 2
    summary = run_fit(load_config(None, raw=raw), resume=True, verbose=False).summary
    assert summary["processes"] == 1 and summary["processes_before_resume"] == 2 and summary["epochs_run"] == 2


def test_runs_of_compare_stack_and_tune_refuse_several_processes(tmp_path: Path, tiny_hf_dir: Path) -> None:
    from conftest import tiny_run_config
    from headstart.config import load_config
    from headstart.errors import ConfigError
    from headstart.experiments.fit import run_fit

    raw = tiny_run_config(tmp_path, tiny_hf_dir, trainer={"accelerator": "cpu", "devices": 2})
    with pytest.raises(ConfigError, match=r"trainer.devices=2 .* 2 processes.*Set trainer.devices: 1.*--shard I/N"):
        run_fit(load_config(None, raw=raw), one_process=True, verbose=False)
    assert not Path(raw["output_dir"]).exists()  # refused before the run directory was made


def test_rank_consistency_names_what_differs(monkeypatch) -> None:
    """Ranks that built other param groups, or whose weights drifted, stop the run with what differs."""
    from types import SimpleNamespace

    from conftest import TinyEncoder
    from headstart import FinetuneModule
    from headstart.train.distributed import RankConsistency

    model = FinetuneModule(TinyEncoder(), 2, lr=1e-2)
    groups, _ = model.build_schedule(10, 5)
    trainer = SimpleNamespace(world_size=2, current_epoch=0, optimizers=[torch.optim.SGD(groups, lr=0.1)])
    other: dict = {}

    def gather(out: list, obj) -> None:  # rank 1 answers with what ``other`` makes of rank 0's object
        out[0], out[1] = obj, other.get("fn", lambda o: o)(obj)

    monkeypatch.setattr(torch.distributed, "all_gather_object", gather)
    check = RankConsistency()
    check.on_train_start(trainer, model)  # equal: nothing happens
    check.on_train_epoch_end(trainer, model)
    other["fn"] = lambda o: ("x" * 24, {**o[1], "blocks": ["other"]})
    with pytest.raises(RuntimeError, match=r"Rank 1 built a different layer map, param groups and LR schedule"):
        check.on_train_start(trainer, model)
    other["fn"] = lambda sums: [s + 1.0 for s in sums]
    with pytest.raises(RuntimeError, match=r"After epoch 1 the weights of rank 1 differ from rank 0's \(first: "
                                           r"'backbone\.module\.stem\.weight'"):
        check.on_train_epoch_end(trainer, model)
