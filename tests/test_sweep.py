"""Sweeps on a tiny random model: 2 methods x 2 seeds x 2 orders through the local pool (one run killed
mid-stream, then resumed), a run that fails without stopping the others, exact reproduction of every
ledger by a second launch of the same spec, and the same study on Ray when Ray is installed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.tables import final_stats, load_ledger
from stream.engine.study import StudyDirectory, StudySpec
from stream.engine.sweep import SweepProgress, run_study

# Enough steps per task (2 epochs of 64 rows at batch 16) that a run can be caught between two steps.
SPEC = """
name = "tiny-study"
[base]
tasks = ["sst2", "rte", "stsb"]
backbone = "{model}"
data_dir = "{data}"
device = "cpu"
budget = {{ max_train_examples = 64, epochs = 2, batch_size = 16, max_eval_examples = 24, max_dev_examples = 16 }}
[grid]
methods = ["full", "last_layer:k=1"]
seeds = [0, 1]
orders = [["sst2", "rte", "stsb"], ["stsb", "sst2", "rte"]]
[[runs]]                       # the tiny model has 2 blocks: this run fails when it starts
method = "last_layer:k=3"
"""
BROKEN = "last_layer-k3__seed0__given"


def _write_spec(tmp_path: Path, model: Path, data: Path) -> Path:
    path = tmp_path / "tiny-study.toml"
    path.write_text(SPEC.format(model=model, data=data))
    return path


def _ledger(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def _numbers(study_dir: Path) -> dict:
    """What must reproduce exactly: every ledger row's score and bytes, and every artifact's hash."""
    out = {}
    for run_dir in sorted((study_dir / "runs").iterdir()):
        if (run_dir / "ledger.jsonl").exists():
            for row in _ledger(run_dir):
                out[(run_dir.name, row["step"], row["eval_task"])] = (
                    row["score"], row["artifact_bytes"], row["cumulative_bytes"], row["artifact_sha256"])
    return out


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory, tiny_model_dir, glue_dir) -> Path:
    return _write_spec(tmp_path_factory.mktemp("spec"), tiny_model_dir, glue_dir)


@pytest.fixture(scope="module")
def killed_and_resumed(spec_file, tmp_path_factory):
    """Launch 1 on 2 workers, SIGKILLing the worker of the first run seen past its first step; launch 2."""
    study_dir = tmp_path_factory.mktemp("study")
    spec = StudySpec.from_file(spec_file)
    directory = StudyDirectory(study_dir)
    killed: dict = {}
    seen: list[SweepProgress] = []

    def kill_one(progress: SweepProgress) -> None:
        seen.append(progress)
        for active in progress.active:
            if not killed and active.step >= 2:
                run_dir = directory.run_dir(active.run_id)
                killed.update(run_id=active.run_id, steps_done=len({r["step"] for r in _ledger(run_dir)}),
                              first=next((run_dir / "artifacts").rglob("001-*.safetensors")))
                killed["first_mtime"] = killed["first"].stat().st_mtime_ns
                os.kill(directory.status(active.run_id)["pid"], signal.SIGKILL)

    first = run_study(spec, study_dir, workers=2, threads=1, spec_file=spec_file, on_progress=kill_one,
                      poll_seconds=0.02)
    assert killed, "no run was caught between two steps; the test budget is too small for this machine"
    killed_status = directory.status(killed["run_id"])
    second = run_study(spec, study_dir, workers=1, threads=1, spec_file=spec_file, poll_seconds=0.2)
    return SimpleNamespace(study_dir=study_dir, spec=spec, first=first, second=second, killed=killed,
                           killed_status=killed_status, progress=seen)


def test_a_killed_run_fails_alone_and_resumes_from_its_last_step(killed_and_resumed):
    k = killed_and_resumed
    run_id = k.killed["run_id"]
    assert set(k.first.failed) == {run_id, BROKEN}
    assert "WorkerDied" in k.first.failed[run_id] and "SIGKILL" in k.first.failed[run_id]
    assert k.killed_status["state"] == "failed" and "SIGKILL" in k.killed_status["error"]
    assert len(k.first.completed) == 7
    # Launch 2 skipped the 7 finished runs, resumed the killed one, and tried the broken one again.
    assert sorted(k.second.skipped) == sorted(k.first.completed)
    assert k.second.completed == [run_id] and set(k.second.failed) == {BROKEN}
    run_dir = k.study_dir / "runs" / run_id
    assert k.killed["steps_done"] >= 1
    assert k.killed["first"].stat().st_mtime_ns == k.killed["first_mtime"]  # step 1 was not trained again
    rows = _ledger(run_dir)
    assert sorted((r["step"], r["eval_task"]) for r in rows) == sorted(
        {(r["step"], r["eval_task"]) for r in rows})  # no step recorded twice
    assert {r["step"] for r in rows} == {1, 2, 3}
    assert StudyDirectory(k.study_dir).status(run_id)["state"] == "done"


def test_progress_reports_runs_done_and_each_workers_task(killed_and_resumed):
    lines = [p.line() for p in killed_and_resumed.progress]
    assert any(" w0 " in line or " w1 " in line for line in lines)
    assert any("step 2/3" in line for line in lines)
    assert killed_and_resumed.progress[-1].done == 7 and killed_and_resumed.progress[-1].total == 9


def test_the_broken_run_is_recorded_with_its_error(killed_and_resumed):
    status = StudyDirectory(killed_and_resumed.study_dir).status(BROKEN)
    assert status["state"] == "failed"
    assert "ConfigError" in status["error"] and "k must be <= 2" in status["error"]
    assert "Traceback" in status["traceback"]


def test_aggregates_are_the_means_of_the_runs(killed_and_resumed):
    study_dir = killed_and_resumed.study_dir
    stats = final_stats(load_ledger(study_dir)).set_index("method")
    assert set(stats.index) == {"full", "last_layer-k1"}
    for label in stats.index:
        finals = []
        for run_dir in sorted((study_dir / "runs").glob(f"{label}__*")):
            rows = _ledger(run_dir)
            finals.append(np.mean([r["score"] for r in rows if r["step"] == 3]))
        assert len(finals) == 4
        assert stats.loc[label, "average"] == pytest.approx(np.mean(finals), abs=1e-9)
        assert stats.loc[label, "average_std"] == pytest.approx(np.std(finals, ddof=1), abs=1e-9)


def test_study_records_spec_configs_versions_and_launches(killed_and_resumed):
    study_dir = killed_and_resumed.study_dir
    record = json.loads((study_dir / "study.json").read_text())
    assert (study_dir / record["spec_file"]).read_text().startswith("\nname = \"tiny-study\"")
    assert len(record["runs"]) == 9 and all(run["config"]["methods"] for run in record["runs"])
    launches = [json.loads(line) for line in (study_dir / "launches.jsonl").read_text().splitlines()]
    assert [launch["workers"] for launch in launches] == [2, 1]
    assert all(launch["threads"] == 1 and launch["versions"]["torch"] for launch in launches)
    run = next(r for r in record["runs"] if r["run_id"] == "full__seed1__order-stsb.sst2.rte")
    saved = json.loads((study_dir / run["run_dir"] / "config.json").read_text())
    assert saved == run["config"] and saved["seed"] == 1 and saved["tasks"] == ["stsb", "sst2", "rte"]
    assert (study_dir / run["run_dir"] / "versions.json").exists()
    assert (study_dir / run["run_dir"] / "run.log").read_text().count("step 3/3") == 1


def test_relaunching_the_spec_reproduces_every_ledger(killed_and_resumed, spec_file, tmp_path, capsys):
    """A clean second study from the same spec (through the CLI, on 2 workers) has the same scores, bytes
    and artifact hashes as the first, including the run that was killed and resumed."""
    from stream.engine.cli import main

    again = tmp_path / "again"
    code = main(["sweep", str(spec_file), "--study-dir", str(again), "--workers", "2", "--threads", "1",
                 "--no-report"])
    assert code == 1  # the broken run fails again
    assert "8 completed now, 1 failed" in capsys.readouterr().out
    expected, got = _numbers(killed_and_resumed.study_dir), _numbers(again)
    assert len(expected) == 8 * 6 and got == expected
    assert main(["sweep", str(spec_file), "--study-dir", str(again), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("complete") == 8


def test_a_study_refuses_runs_made_by_another_spec(killed_and_resumed, spec_file, tmp_path):
    from stream.core.errors import RunDirectoryError

    changed = tmp_path / "changed.toml"
    changed.write_text(spec_file.read_text().replace("epochs = 2", "epochs = 1"))
    with pytest.raises(RunDirectoryError, match="budget"):
        run_study(StudySpec.from_file(changed), killed_and_resumed.study_dir, workers=1, threads=1)


@pytest.mark.ray
def test_ray_backend_runs_the_same_study(killed_and_resumed, spec_file, tmp_path):
    ray = pytest.importorskip("ray")
    # A third of the study (one seed, one order, and the broken run) keeps Ray's share of the suite short;
    # its runs have the same ids, so their numbers must equal the local pool's exactly.
    text, orders = spec_file.read_text(), 'orders = [["sst2", "rte", "stsb"], ["stsb", "sst2", "rte"]]'
    assert "seeds = [0, 1]" in text and orders in text  # the grid this test cuts down
    part = tmp_path / "part.toml"
    part.write_text(text.replace("seeds = [0, 1]", "seeds = [0]").replace(orders, 'orders = [["sst2", "rte", "stsb"]]'))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    try:
        outcome = run_study(StudySpec.from_file(part), tmp_path / "ray", backend="ray", workers=2, threads=1,
                            poll_seconds=0.5)
    finally:
        ray.shutdown()
    assert len(outcome.completed) == 2 and set(outcome.failed) == {BROKEN}
    numbers = _numbers(tmp_path / "ray")
    local = _numbers(killed_and_resumed.study_dir)
    assert {run for run, _, _ in numbers} == set(outcome.completed)
    assert numbers == {key: value for key, value in local.items() if key[0] in outcome.completed}
