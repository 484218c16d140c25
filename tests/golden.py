"""The golden run: a tiny stream on the real backbone whose scores and artifact hashes are committed.

Any change to training numerics (the loop, a method, batching, precision, initialisation) changes some
artifact's sha256 here, so it shows in review (``tests/test_golden.py`` fails) and a long study knows its
finished runs are stale. After an intended change, regenerate the committed values and commit them with
the change:

    HF_HUB_OFFLINE=1 .venv/bin/python -m tests.golden        # rewrites tests/golden_run.json

The run is pinned to one thread and bf16 autocast (the numerics a run records), on the CPU.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

GOLDEN_FILE = Path(__file__).with_name("golden_run.json")
SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "glue"
METHODS = ("full", "last_layer", "linear_probe", "adapters", "bitfit", "lora", "masking", "diff_pruning",
           "diff_pruning_nonadaptive")


def golden_config(data_dir: Path = SHARED_GLUE):
    """The golden stream: two real GLUE tasks (a single sentence and a regression pair), a few steps each."""
    from stream.core.scenario import Budget
    from stream.engine.config import MethodSpec, RunConfig

    budget = Budget(max_train_examples=24, max_steps=3, batch_size=8, max_seq_length=32, max_dev_examples=16,
                    max_eval_examples=32, dev_evaluations=3)
    return RunConfig(tasks=("sst2", "stsb"), methods=tuple(MethodSpec(name=m) for m in METHODS),
                     data_dir=str(data_dir), budget=budget, device="cpu", precision="bf16", threads=1)


def run_golden(run_dir: Path, data_dir: Path = SHARED_GLUE) -> dict[str, dict]:
    """Run the golden stream into ``run_dir``: ``{"method/task": {"score": ..., "sha256": ...}}``."""
    from stream.engine.runner import run_stream

    run_stream(golden_config(data_dir), run_dir, progress=False)
    results = {}
    for line in (run_dir / "ledger.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["eval_task"] == row["task"]:
            results[f"{row['method']}/{row['task']}"] = {"score": row["score"], "sha256": row["artifact_sha256"]}
    return dict(sorted(results.items()))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = run_golden(Path(tmp) / "golden")
    GOLDEN_FILE.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(results)} golden values to {GOLDEN_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
