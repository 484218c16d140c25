"""The golden run: training numerics unchanged (see tests/golden.py for what it pins and how to update it)."""

from __future__ import annotations

import json

import pytest

from tests.golden import GOLDEN_FILE, SHARED_GLUE, run_golden

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (SHARED_GLUE / "stsb" / "train.jsonl.gz").exists(),
                       reason=f"offline GLUE copy not found at {SHARED_GLUE}"),
]


def test_golden_run_reproduces_the_committed_scores_and_artifacts(tmp_path):
    expected = json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))
    results = run_golden(tmp_path / "golden")
    changed = {key: (expected.get(key), value) for key, value in results.items() if expected.get(key) != value}
    missing = sorted(set(expected) - set(results))
    assert not changed and not missing, (
        "Training numerics changed (committed -> now): " + json.dumps(changed, indent=1)
        + f"\nmissing: {missing}\nIf intended, regenerate with `python -m tests.golden`, commit tests/golden_run.json "
          "with the change, and re-run the studies whose runs it affects.")
