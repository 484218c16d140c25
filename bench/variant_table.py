"""One table per (task, seed) of a study's method variants: scores, training and bytes, from the files only.

Reads a study directory (or run directories) through the package's readers (:func:`analysis.tables.load_ledger`
for the ledger rows, each artifact's JSON sidecar for what training recorded) and prints, per method variant:
the test score (the model rebuilt from the artifact file), the kept dev score, the step it was reached at
out of the steps trained, training seconds per step, the artifact's bytes on disk and its tensor bytes by
group, the bytes over the method's lower bound, new parameters as % of the backbone, and any ``--meta`` fields
of the method's sidecar metadata (a dotted path into it: ``masked_out_fraction``, ``l0_stage.density``).

    taskstream sweep bench/studies/masking_bitfit_lr.toml --data-dir ../shared/glue --workers 2 --threads 1
    python -m bench.variant_table runs/masking_bitfit_lr --meta masked_out_fraction flipped_fraction \\
        --out bench/results/masking_bitfit_lr_study

Run it from the repository root with the package installed (``make setup``); it trains nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.tables import arrival_rows, load_ledger


def _sidecar(row: pd.Series) -> dict[str, Any]:
    """The JSON sidecar written beside the row's artifact (same name, ``.json``)."""
    path = (Path(row["run"]) / row["artifact_path"]).with_suffix(".json")
    return json.loads(path.read_text(encoding="utf-8"))


def _lookup(meta: dict[str, Any], dotted: str) -> Any:
    value: Any = meta
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def variant_rows(table: pd.DataFrame, meta_fields: list[str]) -> pd.DataFrame:
    """One row per (task, seed, order, method variant): the step where the task arrived, scored on itself."""
    own = arrival_rows(table)
    records = []
    for _, row in own.iterrows():
        sidecar = _sidecar(row)
        steps = row["train_steps"]
        bound = row["lower_bound_bytes"]
        record = {
            "task": row["task"], "seed": row["seed"], "order": row["order_id"], "method": row["method"],
            "test": row["score"],
            "dev": row["dev_score"], "best step / steps": f"{sidecar['fit']['best_step']} / {steps}",
            "train s / step": row["seconds"]["train"] / max(1, steps), "artifact bytes": row["artifact_bytes"],
            "tensor bytes by group": ", ".join(f"{k} {v:,}" for k, v in row["breakdown"].items()),
            "/ bound": row["tensor_bytes"] / bound if bound == bound and bound else None,
            "new params %": 100 * row["new_params_fraction"],
        }
        record.update({field: _lookup(sidecar.get("meta", {}), field) for field in meta_fields})
        records.append(record)
    return pd.DataFrame(records)


# Column -> format; other numbers: integers with thousands separators, fractions to 3 significant digits.
_FORMATS = {"test": ".1f", "dev": ".1f", "train s / step": ".2f", "/ bound": ".3f", "new params %": ".3f"}


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if column in _FORMATS:
        return format(value, _FORMATS[column])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def markdown(rows: pd.DataFrame, source: str) -> str:
    """Markdown tables, one per (task, seed, order), in the order the variants appear in the study."""
    lines = [f"# Method variants of {source}", "",
             f"Made by `python -m bench.variant_table {' '.join(sys.argv[1:])}` from the study's files. Test: the "
             "task's GLUE metric x 100 on the model rebuilt from the artifact; dev: the kept state's dev score; "
             "bytes: the artifact's tensor file plus its sidecar; / bound: tensor bytes over the lower bound.", ""]
    columns = [c for c in rows.columns if c not in ("task", "seed", "order")]
    several_orders = rows["order"].nunique() > 1
    for (task, seed, order), group in rows.groupby(["task", "seed", "order"], sort=False):
        title = f"## {task}, seed {seed}" + (f", order {order}" if several_orders else "")
        lines += [title, "", "| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
        lines += ["| " + " | ".join(_cell(c, v) for c, v in zip(columns, record)) + " |"
                  for record in group[columns].itertuples(index=False)]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="study or run directories")
    parser.add_argument("--meta", nargs="*", default=[], help="sidecar meta fields to add (dotted paths)")
    parser.add_argument("--out", type=Path, default=None, help="also write <out>.md and <out>.json")
    args = parser.parse_args(argv)
    table = load_ledger(args.paths)
    if table.empty:
        parser.error(f"no finished steps under {', '.join(map(str, args.paths))}: run the study first")
    rows = variant_rows(table, args.meta)
    text = markdown(rows, ", ".join(str(p) for p in args.paths))
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(rows.to_json(orient="records", indent=1, double_precision=15) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
