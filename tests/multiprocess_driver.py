"""`dereason-train ARGS` as one process of an `accelerate launch`, for tests/test_train_multiprocess.py, which needs
to know what each process did: the barriers it passed and the arms tables it made, written when it ends as
$MULTIPROCESS_RECORD/rank-<RANK>.json.

    accelerate launch ... tests/multiprocess_driver.py arms RECIPE.yaml
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(arguments: list[str]) -> None:
    import torch.distributed

    import train.arms
    from train.cli import app

    record = {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"]), "barriers": 0, "tables": 0}
    barrier, make_table = torch.distributed.barrier, train.arms.arms_table

    def counted_barrier(*args, **kwargs):
        record["barriers"] += 1
        return barrier(*args, **kwargs)

    def counted_table(*args, **kwargs):
        record["tables"] += 1
        return make_table(*args, **kwargs)

    torch.distributed.barrier, train.arms.arms_table = counted_barrier, counted_table
    try:
        app(arguments, prog_name="dereason-train")
    finally:
        path = Path(os.environ["MULTIPROCESS_RECORD"]) / f"rank-{record['rank']}.json"
        path.write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
