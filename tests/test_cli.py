"""The command line, run in-process (``stream.engine.cli.main``): a small run with plot and report, and clear errors."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli


def _small_run_args(model: Path, data: Path, run_dir: Path) -> list:
    return ["run", "--backbone", model, "--data-dir", data, "--tasks", "sst2,stsb",
            "--methods", "linear_probe,last_layer:k=1", "--max-train-examples", 24, "--epochs", 1,
            "--max-eval-examples", 16, "--batch-size", 8, "--device", "cpu", "--run-dir", run_dir, "--no-progress"]


def test_run_plot_and_report(tiny_model_dir, glue_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(*_small_run_args(tiny_model_dir, glue_dir, run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "linear_probe" in result.stdout and "last_layer-k1" in result.stdout
    rows = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"linear_probe", "last_layer-k1"} and len(rows) == 6
    for name in ("storage", "average_score", "score_vs_storage"):
        png = run_dir / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    report = (run_dir / "report.md").read_text()
    assert "## Final scores and storage" in report and "figures/storage.png" in report
    plotted = run_cli("plot", run_dir)
    assert plotted.returncode == 0 and "storage.png" in plotted.stdout
    reported = run_cli("report", run_dir)
    assert reported.returncode == 0 and reported.stdout.strip().endswith("report.md")


def _broken_data(glue_dir: Path, tmp_path: Path, task: str, line: int, content: str) -> Path:
    data = tmp_path / "data"
    shutil.copytree(glue_dir, data)
    path = data / task / "train.jsonl.gz"
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    lines[line - 1] = content
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return data


@pytest.mark.parametrize("case", ["unknown_method", "bad_budget", "bad_json_row", "label_out_of_range",
                                  "missing_data_dir", "offline_without_data"])
def test_bad_input_gives_a_clear_error(case, tiny_model_dir, glue_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = _small_run_args(tiny_model_dir, glue_dir, run_dir)
    expected: list[str]
    if case == "unknown_method":
        args[args.index("--methods") + 1] = "linear_probe,lora2"
        expected = ["Unknown method 'lora2'", "Registered:"]
    elif case == "bad_budget":
        args[args.index("--batch-size") + 1] = 0
        expected = ["budget.batch_size must be >= 1; got 0."]
    elif case == "bad_json_row":
        data = _broken_data(glue_dir, tmp_path, "sst2", 3, '{"sentence": "good film", "label": 1')
        args[args.index("--data-dir") + 1] = data
        expected = ["sst2/train.jsonl.gz", "line 3", "Fix"]
    elif case == "label_out_of_range":
        data = _broken_data(glue_dir, tmp_path, "sst2", 5, '{"sentence": "good film", "label": 7, "idx": 4}')
        args[args.index("--data-dir") + 1] = data
        expected = ["sst2/train.jsonl.gz", "line 5", "7"]
    elif case == "missing_data_dir":
        args[args.index("--data-dir") + 1] = tmp_path / "nowhere"
        expected = ["nowhere", "does not exist"]
    else:
        i = args.index("--data-dir")
        del args[i:i + 2]
        expected = ["--data-dir", "TASKSTREAM_DATA_DIR"]
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("taskstream: error:")
    for part in expected:
        assert part in result.stderr, (part, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert not (run_dir / "ledger.jsonl").exists(), "nothing is trained when the input is bad"
