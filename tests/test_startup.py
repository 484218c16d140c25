"""The small commands answer without the heavy libraries: ``--help``, ``methods``, ``tasks`` and every argument,
config, study-spec or ``predict`` naming error run in a fresh interpreter that never imports torch, transformers,
datasets, peft, Avalanche, scikit-learn or scipy (bench/startup.py measures the seconds this saves)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.synthetic_ledgers import write_run

HEAVY = ("torch", "transformers", "datasets", "peft", "avalanche", "sklearn", "scipy")
# Runs ``taskstream ARGV`` in this interpreter and prints its exit status and the heavy modules it imported.
_PROBE = """
import json, sys
from stream.engine.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(%r))}))
""" % (HEAVY,)


def _probe(args: list[str], cwd) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def _files(tmp_path):
    (tmp_path / "tasks5.toml").write_text("tasks = 5\n")
    (tmp_path / "budget3.yaml").write_text("budget: 3\n")
    (tmp_path / "option.toml").write_text('tasks = ["rte"]\n[[methods]]\nname = "lora"\nrank = 0\n')
    (tmp_path / "study.toml").write_text('name = "s"\n[base]\ntasks = ["rte"]\n[grid]\nmethods = ["ful"]\n')
    write_run(tmp_path / "finished", ("full", "last_layer-k1"), seed=0, order_id="order0")
    return tmp_path


CASES = {
    "help": (["--help"], 0, ""),
    "methods": (["methods"], 0, ""),
    "tasks": (["tasks"], 0, ""),
    "unknown flag": (["run", "--bogus"], 2, "unrecognized arguments"),
    "unknown task": (["run", "--tasks", "bogus"], 2, "Unknown task 'bogus'"),
    "unknown method": (["run", "--methods", "lorax"], 2, "Unknown method 'lorax'"),
    "bad method option": (["run", "--methods", "last_layer:k=x"], 2, "LastLayerConfig.k"),
    "unknown method option": (["run", "--methods", "masking:bogus=1"], 2, "Unknown option(s) 'bogus'"),
    "bad budget": (["run", "--batch-size", "0"], 2, "batch_size"),
    "tasks = 5 in a file": (["run", "--config", "tasks5.toml"], 2, "RunConfig.tasks"),
    "budget: 3 in a file": (["run", "--config", "budget3.yaml"], 2, "budget"),
    "bad option in a file": (["run", "--config", "option.toml"], 2, "LoraConfig.rank"),
    "study spec error": (["sweep", "study.toml", "--dry-run"], 2, "Unknown method 'ful'"),
    "predict: unknown task": (["predict", "finished", "--task", "sst2", "--method", "full", "x"], 2, "no task 'sst2'"),
    "predict: unknown method": (["predict", "finished", "--task", "rte", "--method", "ful", "x"], 2,
                                "Did you mean 'full'?"),
    "predict: bad device": (["predict", "finished", "--task", "rte", "--device", "gpu", "x", "y"], 2,
                            "--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'gpu'"),
    "retrain: unknown method label": (["retrain", "finished", "--method", "ful", "--task", "rte"], 2,
                                      "Unknown method label 'ful'"),
    "retrain: unknown task": (["retrain", "finished", "--method", "full", "--task", "sst2"], 2, "Unknown task 'sst2'"),
    "predict: a pair task given one text": (["predict", "finished", "--task", "rte", "--method", "full", "x"], 2,
                                            "takes 2 texts"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_small_commands_and_input_errors_import_no_heavy_library(case, tmp_path):
    args, code, message = CASES[case]
    result = _probe(args, _files(tmp_path))
    assert result["code"] == code, result["stderr"]
    assert message in result["stderr"]
    assert result["heavy"] == [], f"{case} imported {result['heavy']}"
    assert not (tmp_path / "runs").exists()  # an error writes nothing


def test_a_reader_that_stops_early_gets_no_traceback():
    # `taskstream methods | head -3`: the pipe closes before the listing is written
    process = subprocess.Popen([sys.executable, "-m", "stream.engine.cli", "methods"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
