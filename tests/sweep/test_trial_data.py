"""A trial's training split becomes a Ray Dataset without asking Ray for a CPU.

A trial starts while others hold most of the CPUs (two trials of 0.8 CPU on 2 cores, its own
rollout replica already up). `from_arrow` and `read_parquet` run a 1-CPU task for the block's
metadata, so the trial waited until another trial ended and the sweep ran one trial at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from paretorl.sweep.trial import prompt_dataset


def test_the_training_split_is_read_while_every_cpu_is_reserved(ray_local, tmp_path):
    from ray.util.placement_group import placement_group, remove_placement_group

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"prompt": [f"{i}+1=" for i in range(10)], "answer": [str(i + 1) for i in range(10)]}), path)
    cpus = ray_local.available_resources().get("CPU", 0)
    pg = placement_group([{"CPU": cpus}])  # every free CPU, as running trials and replicas hold them
    ray_local.get(pg.ready(), timeout=60)
    try:
        assert ray_local.available_resources().get("CPU", 0) < 1
        pool = ThreadPoolExecutor(1)
        try:
            ds = pool.submit(prompt_dataset, str(path)).result(timeout=60)  # a CPU task would wait here for ever
        finally:
            pool.shutdown(wait=False)
        assert ds.count() == 10 and ds.schema().names == ["prompt", "answer"]
    finally:
        remove_placement_group(pg)
