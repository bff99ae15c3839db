"""Reference kernel of ``qpass::StreamingDataflowPartition`` (``qpass.ops.partition``): runs the partition model
with a nested interpreter of the same executor (or the store's runner for it, e.g. a C simulation), so a
partitioned model (host nodes + partitions) runs end to end."""
from __future__ import annotations

import numpy as np

from qpass.ops.partition import PARTITION_DOMAIN, PARTITION_OP, partition_ref
from qpass.reference.registry import register


def _check(ex, node) -> str | None:
    try:
        ex.partitions.resolve(*partition_ref(node.proto))
    except Exception as exc:  # noqa: BLE001 - reported at construction, before any computation
        return str(exc)
    return None


@register(PARTITION_OP, domain=PARTITION_DOMAIN, check=_check, with_executor=True)
def run_partition(ex, node, *inputs):
    rel, sha = partition_ref(node.proto)
    model = ex.partitions.resolve(rel, sha)
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    feeds = {n: np.asarray(v) for n, v in zip(names, inputs)}
    runner = ex.partitions.runner(sha, node.name)
    outs = runner(feeds) if runner is not None else ex.sub_executor(model).run(feeds)
    return tuple(np.asarray(outs[o.name], np.float32) for o in model.graph.output)
