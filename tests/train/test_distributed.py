"""The Monitor under torch.distributed: gloo, 2 CPU processes, DistributedDataParallel."""

import json
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from babysit.train import Monitor


def _worker(rank: int, world: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)  # the same initial weights on both ranks
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(rank)  # each rank its own shard
        with Monitor(ddp, opt, every=4) as mon:
            for step in range(1, 13):
                x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
                loss = nn.functional.cross_entropy(ddp(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                # rank 1 alone sees a NaN loss at step 9 (its own loss, not the gradients)
                mon.step(loss * math.nan if rank == 1 and step == 9 else loss)
        path = mon.save_jsonl(f"{folder}/history.jsonl")
        report = mon.report()
        summary = {
            "rank": rank,
            "alerts": [a["guard"] for a in mon.alerts],
            "codes": report.codes,
            "ranks": report.meta["ranks"],
            "ratios": sum("update_ratios" in r for r in mon.history),
            "names": sorted(mon.history[0]["update_ratios"]),
            "path": str(path),
        }
        with open(f"{folder}/rank{rank}.json", "w") as f:
            json.dump(summary, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawning two torch processes takes ~1 min on a loaded 2-core machine
def test_each_rank_guards_its_own_loss_and_rank_zero_writes_one_history(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["alerts"] == [] and ranks[1]["alerts"] == ["nonfinite_loss"]
    assert "NAN_LOSS" in ranks[1]["codes"] and "NAN_LOSS" not in ranks[0]["codes"]
    assert [r["ranks"] for r in ranks] == [2, 2]
    assert ranks[0]["ratios"] == ranks[1]["ratios"] == 3
    assert ranks[0]["names"] == ["0.bias", "0.weight", "2.bias", "2.weight"]  # no "module."
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 12  # one history, rank 0's, with no alert in it
    assert all("alerts" not in json.loads(line) for line in lines)
