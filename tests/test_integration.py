"""Integration: the real all-MiniLM-L6-v2 backbone on real GLUE rows, through the command line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_GLUE, run_cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (SHARED_GLUE / "rte" / "train.jsonl.gz").exists(),
                       reason=f"offline GLUE copy not found at {SHARED_GLUE}"),
]


def test_real_backbone_two_tasks_run_plot_report(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("run", "--data-dir", SHARED_GLUE, "--tasks", "rte,sst2", "--methods", "full,last_layer",
                     "--max-train-examples", 48, "--epochs", 1, "--batch-size", 16, "--max-seq-length", 64,
                     "--max-eval-examples", 64, "--device", "cpu", "--run-dir", run_dir, "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    by = {(r["method"], r["step"], r["eval_task"]): r for r in rows}
    backbone_bytes = rows[0]["backbone_bytes"]
    assert rows[0]["backbone_params"] == 22_565_376  # MiniLM-L6 without its unused pooler
    full1, full2 = by[("full", 1, "rte")], by[("full", 2, "sst2")]
    # Full finetuning stores a whole model per task and shares nothing: S(t) = t x model. (The backbone's
    # bytes are its files on disk, tokenizer included, so they are compared with the fp32 weights instead.)
    assert full1["artifact_bytes"] > 4 * rows[0]["backbone_params"]
    assert full2["cumulative_bytes"] == full1["artifact_bytes"] + full2["artifact_bytes"]
    assert full2["total_params_multiplier"] == pytest.approx(2.0, rel=0.01)
    # Last-layer tuning stores one block plus a head: S(t) = model + t x (block + head).
    ll1, ll2 = by[("last_layer", 1, "rte")], by[("last_layer", 2, "sst2")]
    # q, k, v, attention-output and the two FFN matrices, their biases, and two LayerNorms.
    block_params = 4 * 384 * 384 + 2 * 384 * 1536 + (5 * 384 + 1536) + 2 * 2 * 384
    assert ll1["new_params"] == block_params + 384 * 2 + 2
    assert ll2["cumulative_bytes"] == backbone_bytes + ll1["artifact_bytes"] + ll2["artifact_bytes"]
    for row in rows:
        metric = next(iter(row["metrics"]["validation"].values()))
        assert 0.0 <= metric <= 100.0 and row["score"] == pytest.approx(metric)
    assert (run_dir / "report.md").exists()
    assert all((run_dir / "figures" / f"{n}.png").stat().st_size > 10_000
               for n in ("storage", "average_score", "score_vs_storage"))
