"""The arrival loop end to end on a tiny model: ledger contents, resume after SIGKILL, refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stream.core.errors import ArtifactError, RunDirectoryError
from stream.core.ledger import ROW_FIELDS, SCHEMA_VERSION
from stream.core.rundir import LEDGER_FILE
from stream.core.scenario import Budget
from stream.engine.config import MethodSpec, RunConfig
from stream.engine.runner import RunProgress, run_stream

REPO = Path(__file__).resolve().parents[1]
BUDGET = Budget(max_train_examples=32, epochs=1, batch_size=16, max_eval_examples=24, max_dev_examples=16)


def _config(tiny_model_dir, glue_dir, **changes) -> RunConfig:
    base = dict(tasks=("sst2", "rte", "stsb"), methods=(MethodSpec(name="linear_probe"), MethodSpec(name="full")),
                backbone=str(tiny_model_dir), data_dir=str(glue_dir), budget=BUDGET, device="cpu")
    base.update(changes)
    return RunConfig(**base)


def _comparable(run_dir: Path) -> list[dict]:
    """Ledger rows without wall times (the only thing allowed to differ between identical runs)."""
    rows = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    return sorted(rows, key=lambda r: (r["method"], r["step"], r["eval_step"]))


def test_ledger_has_one_row_per_method_step_and_seen_task(tiny_model_dir, glue_dir, tmp_path):
    run_stream(_config(tiny_model_dir, glue_dir), tmp_path, progress=False)
    rows = _comparable(tmp_path)
    assert len(rows) == 2 * (1 + 2 + 3)
    probe = [r for r in rows if r["method"] == "linear_probe"]
    assert [(r["step"], r["eval_task"]) for r in probe] == [
        (1, "sst2"), (2, "sst2"), (2, "rte"), (3, "sst2"), (3, "rte"), (3, "stsb")]
    assert all(r["reused"] == (r["eval_step"] < r["step"]) for r in rows)
    full = [r for r in rows if r["method"] == "full" and r["eval_step"] == r["step"]]
    assert full[-1]["total_params_multiplier"] == pytest.approx(3.0, rel=0.01)
    assert json.loads((tmp_path / "versions.json").read_text())["torch"]
    assert json.loads((tmp_path / "config.json").read_text())["tasks"] == ["sst2", "rte", "stsb"]
    written = json.loads((tmp_path / LEDGER_FILE).read_text().splitlines()[0])
    assert set(written) == set(ROW_FIELDS), "the ledger module's ROW_FIELDS documents every field the runner writes"
    assert written["schema_version"] == SCHEMA_VERSION


_CHILD = """
from pathlib import Path
from stream.engine.config import MethodSpec, RunConfig
from stream.engine.runner import run_stream
from stream.core.scenario import Budget
budget = Budget(**{budget!r})
config = RunConfig(tasks=("sst2", "rte", "stsb"), methods=(MethodSpec(name="linear_probe"), MethodSpec(name="full")),
                   backbone={model!r}, data_dir={data!r}, budget=budget, device="cpu")
run_stream(config, Path({run!r}), progress=False)
"""


def test_a_run_killed_with_sigkill_resumes_to_the_same_ledger(tiny_model_dir, glue_dir, tmp_path):
    budget = Budget(max_train_examples=48, epochs=3, batch_size=8, max_eval_examples=24, max_dev_examples=16)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    script = _CHILD.format(model=str(tiny_model_dir), data=str(glue_dir), run=str(killed),
                           budget=dataclasses.asdict(budget))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # this checkout, whatever is installed
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    ledger = killed / "ledger.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if ledger.exists() and len(ledger.read_text().splitlines()) >= 3:  # linear_probe steps 1 and 2 done
            break
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be killed: " + child.stderr.read().decode()[-2000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    written = {p: p.stat().st_mtime_ns for p in (killed / "artifacts").rglob("*.safetensors")}
    assert written, "the killed run had written artifacts"

    config = _config(tiny_model_dir, glue_dir, budget=budget)
    run_stream(config, killed, progress=False)
    run_stream(config, clean, progress=False)
    resumed_rows, clean_rows = _comparable(killed), _comparable(clean)
    assert len(resumed_rows) == len(clean_rows)
    for resumed, fresh in zip(resumed_rows, clean_rows):
        differing = {k for k in fresh if resumed.get(k) != fresh[k]}
        assert not differing, (resumed["method"], resumed["step"], {k: (resumed.get(k), fresh[k]) for k in differing})
    for path, mtime in written.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten on resume"


def test_a_run_directory_with_another_config_is_refused(tiny_model_dir, glue_dir, tmp_path):
    run_stream(_config(tiny_model_dir, glue_dir, tasks=("sst2",)), tmp_path, progress=False)
    with pytest.raises(RunDirectoryError) as info:
        run_stream(_config(tiny_model_dir, glue_dir, tasks=("sst2",), seed=5), tmp_path, progress=False)
    assert "seed: 0 -> 5" in str(info.value)
    # Resuming with the same config is fine and changes nothing.
    before = (tmp_path / "ledger.jsonl").read_bytes()
    run_stream(_config(tiny_model_dir, glue_dir, tasks=("sst2",)), tmp_path, progress=False)
    assert (tmp_path / "ledger.jsonl").read_bytes() == before


def test_resume_refuses_a_tampered_artifact(tiny_model_dir, glue_dir, tmp_path):
    config = _config(tiny_model_dir, glue_dir, tasks=("sst2",), methods=(MethodSpec(name="linear_probe"),))
    run_stream(config, tmp_path, progress=False)
    artifact = next((tmp_path / "artifacts").rglob("*.safetensors"))
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        run_stream(config, tmp_path, progress=False)


def test_a_frozen_backbone_method_scores_a_task_the_same_at_any_position(tiny_model_dir, glue_dir, tmp_path):
    from safetensors.torch import load_file

    results = []
    for order in (("sst2", "rte"), ("rte", "sst2")):
        run_dir = tmp_path / "-".join(order)
        config = _config(tiny_model_dir, glue_dir, tasks=order, methods=(MethodSpec(name="linear_probe"),))
        run_stream(config, run_dir, progress=False)
        own = {r["task"]: r for r in _comparable(run_dir) if r["eval_step"] == r["step"]}
        results.append({task: (row["score"], load_file(run_dir / row["artifact_path"])) for task, row in own.items()})
    for task in ("sst2", "rte"):
        (score_a, tensors_a), (score_b, tensors_b) = results[0][task], results[1][task]
        assert score_a == score_b
        assert tensors_a.keys() == tensors_b.keys()
        assert all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)


def test_a_searched_option_is_chosen_per_task_on_dev_and_recorded(tiny_model_dir, glue_dir, tmp_path):
    spec = MethodSpec.from_value({"name": "linear_probe", "search": {"learning_rate": [1e-4, 3e-2]},
                                  "per_task": {"rte": {"learning_rate": 1e-3}}})
    run_stream(_config(tiny_model_dir, glue_dir, tasks=("sst2", "rte"), methods=(spec,)), tmp_path, progress=False)
    rows = {r["task"]: r for r in _comparable(tmp_path) if r["eval_task"] == r["task"]}
    sidecar = json.loads((tmp_path / rows["sst2"]["artifact_path"]).with_suffix(".json").read_text())
    selection = sidecar["selection"]
    assert selection["search"] == {"learning_rate": [1e-4, 3e-2]}
    scores = {c["options"]["learning_rate"]: c["dev_score"] for c in selection["candidates"]}
    assert selection["chosen"] == {"learning_rate": max(scores, key=scores.get)}
    assert sidecar["config"]["learning_rate"] == selection["chosen"]["learning_rate"]
    assert rows["sst2"]["chosen_options"] == selection["chosen"] and rows["sst2"]["dev_score"] == max(scores.values())
    rte = json.loads((tmp_path / rows["rte"]["artifact_path"]).with_suffix(".json").read_text())
    assert rte["selection"] is None and rte["config"]["learning_rate"] == 1e-3  # fixed for this task


def test_numerics_are_recorded_and_a_resume_with_other_threads_warns(tiny_model_dir, glue_dir, tmp_path, caplog):
    config = _config(tiny_model_dir, glue_dir, tasks=("sst2",), methods=(MethodSpec(name="linear_probe"),),
                     threads=1, precision="fp32")
    run_stream(config, tmp_path, progress=False)
    row = _comparable(tmp_path)[0]
    assert row["numerics"] == {"device": "cpu", "precision": "fp32", "threads": 1}
    sidecar = json.loads((tmp_path / row["artifact_path"]).with_suffix(".json").read_text())
    assert sidecar["numerics"] == row["numerics"]
    longer = dataclasses.replace(config, tasks=("sst2", "rte"), threads=2)
    (tmp_path / "config.json").write_text(json.dumps({**json.loads((tmp_path / "config.json").read_text()),
                                                      "tasks": ["sst2", "rte"]}))
    with caplog.at_level("WARNING"):
        run_stream(longer, tmp_path, progress=False)
    assert "other numerics" in caplog.text


def test_overall_progress_counts_skipped_pairs_but_paces_only_trained_ones():
    overall = RunProgress(total=4)
    overall.skip()  # finished by an earlier process: no time of its own
    assert "run 1/4 done" in overall.summary() and "left" not in overall.summary()
    overall.finish(120.0)
    assert "run 2/4 done" in overall.summary()
    assert "about 4 min left" in overall.summary()  # 2 pairs left x 120 s each
    overall.finish(60.0)
    overall.finish(60.0)
    assert overall.summary().startswith("run 4/4 done") and "left" not in overall.summary()
