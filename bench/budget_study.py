"""How much budget is enough: full finetuning's learning curves and the budget chosen per task.

Reads the study that ``bench/studies/budget.toml`` describes (one run per budget on the step ladder, every
task in each run) and writes ``bench/results/budget_study.{md,json,png}``:

- per task, the dev score (model selection's split, carved from train) and the test score (GLUE validation)
  that a run of each length reaches, with the task's chance score (always the majority training label);
- the chosen budget per task: the smallest budget B on the ladder whose dev score is within ``--tolerance``
  points (default 1) of the dev score at 2B, and has left chance behind (above the chance score plus its
  noise band: CoLA sits at MCC 0 for 100 and 200 steps, a flat stretch that is not a plateau of learning).
  The largest budget cannot be chosen (nothing to compare it with).

    taskstream sweep bench/studies/budget.toml --data-dir ../shared/glue --workers 2 --threads 1
    python -m bench.budget_study runs/budget

A budget whose dev score is within the tolerance of its double's is a plateau on this seed's curve; with
dev splits of 250-500 rows one point is about one standard error, so a choice is a reading of one curve,
not a law. The figure shows how flat each curve is around its choice.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import REPO  # first: offline Hugging Face defaults

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.tables import arrival_rows, load_ledger  # noqa: E402
from stream.core.scenario import ArrivalBuilder  # noqa: E402
from stream.engine.config import RunConfig, resolve_tasks  # noqa: E402

OUT = REPO / "bench" / "results" / "budget_study"


def chance_scores(study_dir: Path) -> dict[str, dict]:
    """Each task's chance score and noise band, from the study's own data and budgets (one run's config)."""
    study = json.loads((study_dir / "study.json").read_text())
    config = RunConfig.from_dict(study["runs"][0]["config"])
    specs, source = resolve_tasks(config)
    builder = ArrivalBuilder(source, tasks=specs, budgets={t: config.budget_for(t) for t in specs}, seed=config.seed)
    return {task: builder.chance(task) for task in specs}


def study_ladder(study_dir: Path) -> list[int]:
    """Every budget (max_steps) the study's spec lists, finished or not."""
    study = json.loads((study_dir / "study.json").read_text())
    return sorted({run["config"]["budget"]["max_steps"] for run in study["runs"]})


def curves(study_dir: Path) -> dict[str, list[dict]]:
    """task -> [{steps, dev, test, train_seconds}] over the ladder, sorted by steps."""
    table = load_ledger(study_dir)
    own = arrival_rows(table)
    out: dict[str, list[dict]] = {}
    for record in own.to_dict("records"):
        out.setdefault(record["task"], []).append({"steps": int(record["train_steps"]), "dev": record["dev_score"],
                                                   "test": record["score"],
                                                   "train_seconds": record["seconds"]["train"]})
    return {task: sorted(points, key=lambda p: p["steps"]) for task, points in out.items()}


def choose(points: list[dict], tolerance: float, floor: float, ladder: list[int]) -> int | str:
    """The smallest budget whose dev score clears ``floor`` and is within ``tolerance`` of its double's;
    ``"pending"`` when a budget that could still qualify lacks its double's run (the study is unfinished),
    ``"none"`` when the whole ladder is measured and nothing qualifies."""
    by_steps = {p["steps"]: p for p in points}
    for point in points:
        double = by_steps.get(2 * point["steps"])
        if double is None and 2 * point["steps"] in ladder and point["dev"] > floor:
            return "pending"
        if double is not None and point["dev"] > floor and point["dev"] >= double["dev"] - tolerance:
            return point["steps"]
    return "pending" if len(points) < len(ladder) else "none"


def figure(data: dict[str, list[dict]], chosen: dict[str, int | str], chance: dict[str, dict], path: Path) -> None:
    tasks = list(data)
    ladder = sorted({p["steps"] for points in data.values() for p in points})
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.6), sharex=True)
    for ax, task in zip(axes, tasks):
        points = data[task]
        steps = [p["steps"] for p in points]
        ax.plot(steps, [p["dev"] for p in points], "o-", label="dev (selection)")
        ax.plot(steps, [p["test"] for p in points], "s--", label="test (GLUE validation)")
        floor = chance[task]["chance_score"]
        ax.axhline(floor, color="grey", lw=1, ls=":", label="chance (majority label)")
        ax.axhspan(floor, floor + chance[task]["noise_band"], color="grey", alpha=0.12, lw=0,
                   label="within noise of chance")
        if isinstance(chosen[task], int):
            ax.axvline(chosen[task], color="tab:red", lw=1, alpha=0.6)
            ax.annotate(f"chosen {chosen[task]}", (chosen[task], 0.04), xycoords=("data", "axes fraction"),
                        xytext=(4, 0), textcoords="offset points", color="tab:red", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ladder, [str(s) for s in ladder], fontsize=8)
        ax.minorticks_off()
        ax.set_title(task)
        ax.set_xlabel("optimizer steps (log scale)")
    axes[0].set_ylabel("score x100")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Full finetuning of all-MiniLM-L6-v2: score vs budget (one run per budget, batch 32)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--tolerance", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data = curves(args.study_dir)
    chance = chance_scores(args.study_dir)
    ladder = study_ladder(args.study_dir)
    chosen = {task: choose(points, args.tolerance, chance[task]["chance_score"] + chance[task]["noise_band"], ladder)
              for task, points in data.items()}
    lines = ["# Budget study: how many steps full finetuning needs per task", "",
             f"Study: `bench/studies/budget.toml` (one run per budget; all training rows, SST-2 capped at 20,000; "
             f"batch 32; bf16 autocast, length-grouped batches; seed 0). Chosen budget: the smallest on the ladder "
             f"whose dev score is within {args.tolerance:g} point of the dev score at twice the budget and above the "
             "chance score plus its noise band (chance: always the majority training label; band: two standard "
             "errors of guessing on the test rows). \"pending\": the study is unfinished and the budget that could "
             "qualify lacks its double's run; \"none\": no budget on the ladder qualifies. An empty cell: that run "
             "has not reached the task yet (re-running the sweep resumes it).", "",
             "| task | chance | " + " | ".join(f"{s} steps dev / test" for s in ladder) + " | chosen |",
             "|---|---:|" + "---:|" * len(ladder) + "---:|"]
    for task, points in data.items():
        by_steps = {p["steps"]: p for p in points}
        cells = [f"{by_steps[s]['dev']:.1f} / {by_steps[s]['test']:.1f}" if s in by_steps else "" for s in ladder]
        lines.append(f"| {task} | {chance[task]['chance_score']:.1f} (+-{chance[task]['noise_band']:.1f}) | "
                     + " | ".join(cells) + f" | {chosen[task]} |")
    lines += ["", "Training seconds per run (1 thread, machine shared with other jobs):", "",
              "| task | " + " | ".join(str(s) for s in ladder) + " |", "|---|" + "---:|" * len(ladder)]
    for task, points in data.items():
        by_steps = {p["steps"]: p for p in points}
        lines.append(f"| {task} | " + " | ".join(f"{by_steps[s]['train_seconds']:.0f}" if s in by_steps else ""
                                                for s in ladder) + " |")
    lines += ["", "![learning curves](budget_study.png)", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure(data, chosen, chance, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"tolerance": args.tolerance, "chosen_steps": chosen, "curves": data, "chance": chance,
         "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
