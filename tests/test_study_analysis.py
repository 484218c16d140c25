"""Cross-run tables, placement, figures and the study report, on synthetic ledgers with known numbers."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.heatmaps import plot_accuracy_matrices, plot_placement
from analysis.placement import describe_parameter, layer_order, load_placement, placement_summary
from analysis.plots import (plot_order_sensitivity, plot_pareto, plot_score_bands, plot_storage_bands,
                            save_figure)
from analysis.study_report import study_figures, write_study_report
from analysis.tables import (backward_transfer, curve_stats, curves, final_stats, final_table, forgetting,
                             load_ledger, order_table, pareto_mask, position_matrix, task_score_stats,
                             transfer_table)
from tests.conftest import run_cli
from tests.synthetic_ledgers import BACKBONE_BYTES, FORGET_PER_STEP, METHODS, TASKS, write_study



@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("synthetic-study"))


@pytest.fixture(scope="module")
def table(study) -> pd.DataFrame:
    return load_ledger(study)


def _raw_final_averages(study: Path, label: str) -> list[float]:
    """Each run's final average of ``label``, straight from the ledger files."""
    out = []
    for run_dir in sorted((study / "runs").glob(f"{label}__*")):
        rows = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
        last = max(r["step"] for r in rows)
        out.append(float(np.mean([r["score"] for r in rows if r["step"] == last])))
    return out


def test_study_table_has_each_runs_axes(table):
    assert table["run"].nunique() == 4 * len(METHODS)  # the failed run has no ledger
    first = table[table["run_id"] == "last_layer-k2__seed1__order1"].iloc[0]
    assert (first["study"], first["seed"], first["order_id"], first["budget"], first["setting"]) == \
        ("synthetic", 1, "order1", "default", "k=2")
    assert first["order"] == "stsb>rte>mrpc"


def test_final_stats_are_means_and_sample_sds_over_runs(study, table):
    stats = final_stats(table).set_index("method")
    for label in METHODS:
        expected = _raw_final_averages(study, label)
        assert stats.loc[label, "n"] == 4
        assert stats.loc[label, "average"] == pytest.approx(np.mean(expected), abs=1e-9)
        assert stats.loc[label, "average_std"] == pytest.approx(np.std(expected, ddof=1), abs=1e-9)
    assert set(TASKS) <= set(stats.columns)
    assert stats.loc["full", "total_params_multiplier"] == pytest.approx(3.0, rel=1e-6)


def test_curve_stats_follow_each_sharing_rule(table):
    stats = curve_stats(table).set_index(["method", "tasks_seen"])
    size = METHODS["last_layer-k1"][3]
    assert stats.loc[("last_layer-k1", 3), "cumulative_bytes"] == BACKBONE_BYTES + 3 * size + 6
    assert stats.loc[("sequential", 2), "cumulative_bytes"] == METHODS["sequential"][3] + 2
    assert stats.loc[("full", 1), "n"] == 4


def test_task_scores_and_orders_group_as_configurations(table):
    per_task = task_score_stats(table)
    assert len(per_task) == len(METHODS) * len(TASKS) and set(per_task["n"]) == {4}
    orders = order_table(table)
    assert len(orders) == 2 * len(METHODS) and set(orders["n"]) == {2}


def test_transfer_metrics_of_a_forgetting_method(table):
    transfer = transfer_table(table).set_index("run_id")
    # R[3,1] = R[1,1] - 2f, R[3,2] = R[2,2] - f: BWT = -1.5 f; forgetting = mean(2f, f) = 1.5 f.
    assert transfer.loc["sequential__seed0__order0", "backward_transfer"] == pytest.approx(-1.5 * FORGET_PER_STEP)
    assert transfer.loc["sequential__seed0__order0", "forgetting"] == pytest.approx(1.5 * FORGET_PER_STEP)
    assert transfer.loc["full__seed1__order1", "backward_transfer"] == 0.0
    rows = table[table["run_id"] == "sequential__seed1__order0"]
    matrix = position_matrix(rows)
    assert matrix.shape == (3, 3) and np.isnan(matrix.iloc[0, 1])
    assert backward_transfer(matrix.iloc[:1, :1]) != backward_transfer(matrix.iloc[:1, :1])  # nan for one task
    assert forgetting(matrix) == pytest.approx(1.5 * FORGET_PER_STEP)


def test_pareto_mask():
    assert pareto_mask([1, 2, 3, 2], [1, 3, 2, 3]).tolist() == [True, True, False, True]


def test_placement_names_layers_and_summary(table):
    assert describe_parameter("encoder.layer.3.attention.self.query.weight") == ("3", "query")
    assert describe_parameter("encoder.layer.0.output.LayerNorm.bias") == ("0", "LayerNorm")
    assert describe_parameter("encoder.layer.5.intermediate.dense.bias") == ("5", "bias")
    assert describe_parameter("encoder.layer.5.attention.output.dense.weight") == ("5", "attn_out")
    assert describe_parameter("embeddings.word_embeddings.weight") == ("embeddings", "embeddings")
    assert describe_parameter("transformer.layer.2.ffn.lin2.weight") == ("2", "ffn_out")
    assert layer_order(["3", "pooler", "embeddings", "10", "0"]) == ["embeddings", "0", "3", "10", "pooler"]
    placement = load_placement(table)
    assert set(placement["method"]) == {"diff_pruning-density0.005", "diff_pruning-density0.02"}
    summary = placement_summary(placement)
    row = summary[(summary["method"] == "diff_pruning-density0.02") & (summary["task"] == "rte")
                  & (summary["layer"] == "2") & (summary["kind"] == "query")].iloc[0]
    cells = placement[(placement["method"] == "diff_pruning-density0.02") & (placement["task"] == "rte")
                      & (placement["layer"] == "2") & (placement["kind"] == "query")]
    assert row["fraction"] == pytest.approx(cells["changed"].sum() / cells["total"].sum())
    assert row["runs"] == 4


def test_malformed_placement_is_refused(tmp_path):
    study = write_study(tmp_path, labels=("diff_pruning-density0.005",), seeds=(0,), failed_run=False)
    sidecar = next((study / "runs").rglob("001-*.json"))
    sidecar.write_text(json.dumps({"meta": {"placement": {"encoder.layer.0.attention.self.query.weight": [5, 2]}}}))
    with pytest.raises(ValueError, match=r"must be \[changed, total\]"):
        load_placement(load_ledger(study))


def _png_ok(fig, path: Path) -> None:
    save_figure(fig, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_every_figure_renders(table, tmp_path):
    curve_table, final = curves(table), final_table(table)
    _png_ok(plot_score_bands(curve_table), tmp_path / "bands.png")
    storage = plot_storage_bands(curve_table)
    assert "backbone" in storage.axes[0].child_axes[0].get_ylabel()  # the "x backbone" second axis
    _png_ok(storage, tmp_path / "storage.png")
    pareto = plot_pareto(final)
    assert "Pareto front" in [t.get_text() for t in pareto.legends[0].get_texts()]  # below the axes
    _png_ok(pareto, tmp_path / "pareto.png")
    _png_ok(plot_order_sensitivity(final), tmp_path / "order.png")
    _png_ok(plot_accuracy_matrices(table), tmp_path / "matrices.png")
    _png_ok(plot_placement(placement_summary(load_placement(table)), "diff_pruning-density0.005"),
            tmp_path / "placement.png")
    shared = plot_placement(placement_summary(load_placement(table)), "diff_pruning-density0.005", vmax=50.0)
    assert shared.axes[0].get_images()[0].get_clim() == (0.0, 50.0)  # one scale for figures to compare
    assert "log scale" in storage.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="no evolving method"):
        plot_accuracy_matrices(table[table["sharing"] != "evolving"])


def test_single_run_tables_still_work(study):
    run_table = load_ledger(study / "runs" / "full__seed0__order0")
    assert run_table["study"].eq("").all() and run_table["budget"].eq("default").all()
    assert len(final_table(run_table)) == 1 and len(curves(run_table)) == 3


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, str] = {}
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            attrs = dict(attrs)
            self.images[attrs["alt"]] = attrs["src"]


def test_html_report_embeds_every_figure(tmp_path):
    study = write_study(tmp_path / "study", labels=("full", "last_layer-k1", "last_layer-k2",
                                                    "diff_pruning-density0.005", "sequential"), seeds=(0,))
    table = load_ledger(study)
    written = write_study_report(study, tmp_path)
    parser = _Collector()
    parser.feed(written["html"].read_text(encoding="utf-8"))
    expected = set(study_figures(table, load_placement(table)))
    assert {"average_score", "storage", "pareto", "order_sensitivity", "accuracy_matrices",
            "placement_diff_pruning-density0.005"} == expected
    assert set(parser.images) == expected
    for src in parser.images.values():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert parser.tags.count("table") >= 6
    markdown = written["markdown"].read_text()
    assert "| full | 2 |" in markdown and "Failed runs" in markdown and "k must be <= 6" in markdown
    for name in expected:
        assert f"](figures/{name}.png)" in markdown and (tmp_path / "figures" / f"{name}.png").exists()


def test_cli_report_detects_studies_and_runs_and_compares(tmp_path, capsys):
    from stream.engine.cli import main

    small = write_study(tmp_path / "small", labels=("full", "sequential"), seeds=(0,), failed_run=False)
    done = run_cli("report", small)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(small / "report.md"), str(small / "report.html")]
    run_dir = small / "runs" / "full__seed0__order0"
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.md")
    assert main(["compare", str(small), str(run_dir), "--out", str(tmp_path / "cmp")]) == 0
    assert "| full | 2 |" in (tmp_path / "cmp" / "report.md").read_text()  # the run named twice counts once
    assert (tmp_path / "cmp" / "report.html").exists()
