"""A few sentences a report opens with, written from the run's own numbers (never template constants).

:func:`storage_accuracy_sentences` reads a :func:`analysis.tables.final_table` (one row per method) and says
which method stores how much per task for what average score, against full finetuning (or, without it, the
method with the largest files), and how far the scores sit above always answering the majority class.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.tables import average_chance, human_bytes, not_above_chance, task_columns

#: The registered name of the method every other one is compared with, when the run has it.
REFERENCE_METHOD = "full"


def _reference(final: pd.DataFrame) -> pd.Series:
    """Full finetuning's row when present, else the row with the largest per-task files."""
    names = final["method_name"] if "method_name" in final else final["method"]
    full = final[names == REFERENCE_METHOD]
    return full.iloc[0] if not full.empty else final.loc[final["bytes_per_task"].idxmax()]


def _percent(part: float, whole: float) -> str:
    """``0.5%``, ``0.04%``, ``12%``: two significant figures, so a tiny fraction never reads as 0%."""
    share = 100.0 * part / whole
    return f"{share:.2g}%" if share < 10 else f"{share:.0f}%"


def storage_accuracy_sentences(final: pd.DataFrame, chance: pd.DataFrame) -> list[str]:
    """Sentences on storage vs accuracy for one run's methods.

    Args:
        final: one row per method (a single run's :func:`~analysis.tables.final_table`, possibly cut to
            the arrivals every method finished).
        chance: :func:`~analysis.tables.chance_table` of the same rows (nan where the ledger lacks it).
    """
    if final.empty:
        return []
    tasks = task_columns(final)
    reference = _reference(final)
    ref_name, ref_bytes, ref_score = reference["method"], reference["bytes_per_task"], reference["average"]
    over = f"on average over {len(tasks)} task{'s' if len(tasks) != 1 else ''} ({', '.join(tasks)})"
    sentences = [f"{ref_name} stores {human_bytes(ref_bytes)} per task and scores {ref_score:.1f} {over}."]
    others = final[final["method"] != ref_name].sort_values("bytes_per_task")
    for row in others.itertuples(index=False):
        gap = row.average - ref_score
        relation = f"{abs(gap):.1f} {'below' if gap < 0 else 'above'} {ref_name}" if round(gap, 1) else \
            f"the same as {ref_name}"
        sentences.append(f"{row.method} stores {human_bytes(row.bytes_per_task)} per task "
                         f"({_percent(row.bytes_per_task, ref_bytes)} of {ref_name}'s {human_bytes(ref_bytes)}) "
                         f"and scores {row.average:.1f}, {relation}.")
    if len(final) > 1:
        best = final.loc[final["average"].idxmax()]
        smallest = final.loc[final["bytes_per_task"].idxmin()]
        sentences.append(f"The best average is {best['method']}'s ({best['average']:.1f}); the smallest per-task "
                         f"files are {smallest['method']}'s ({human_bytes(smallest['bytes_per_task'])}).")
    level, band = average_chance(chance, tasks)
    if math.isnan(level):
        sentences.append("This ledger does not record chance scores (it predates ledger schema 2), so how far "
                         "the scores are above guessing is not shown (n/a).")
        return sentences
    sentences.append(f"Always answering each task's majority class (regression: the mean label) would average "
                     f"{level:.1f}.")
    guessing = [f"{row['method']} on {task}" for _, row in final.iterrows() for task in tasks
                if not_above_chance(row[task], chance.at[task, "chance_score"], chance.at[task, "noise_band"])]
    if guessing:
        sentences.append(f"Not clearly above that (within the noise band of chance): {', '.join(guessing)}.")
    else:
        sentences.append("Every method is above chance on every task by more than the noise band.")
    return sentences
