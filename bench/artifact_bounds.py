"""Artifact bytes against the information-theoretic lower bound, from trained artifacts on disk.

For every artifact of the given run or study directories whose sidecar records ``lower_bound_bits`` (the
methods that store sparse positions or masks: diff pruning and masking), reads the files back and splits
the bytes on disk into:

- the method's payload: positions (or mask bits), values, head: each beside its own bound (positions:
  ``log2 C(N, k)`` over all N gated weights, as the ledger's bound counts them, and the sum of the
  per-tensor bounds ``sum_t log2 C(n_t, k_t)``, which a per-tensor code may approach because the nonzeros
  are not spread uniformly over the tensors; values and head: their bits at the stored precision);
- the containers: the safetensors header and the JSON sidecar (metadata, placement, training record).

The ratio the target speaks of is artifact bytes (both files) over the ledger's bound at the stored value
precision. For masking, the trained masks are also re-packed in the other coding (bit-packed vs
entropy-coded minority positions) so both formats are measured on the same masks.

    python -m bench.artifact_bounds runs/reproduction --out bench/results/artifact_bounds
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.common import command_line, write_results  # first: offline Hugging Face defaults

from methods.core.codecs import (VALUE_DTYPES, pack_masks, positions_lower_bound_bits,  # noqa: E402
                            unpack_masks)
from safetensors.torch import load_file  # noqa: E402
import torch  # noqa: E402

from analysis.tables import run_entries  # noqa: E402


def artifact_record(tensor_path: Path) -> dict | None:
    """The byte breakdown of one artifact (None when its sidecar has no lower bound)."""
    sidecar_path = tensor_path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    if sidecar.get("lower_bound_bits") is None:
        return None
    tensors = load_file(tensor_path)
    payload = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    tensor_bytes, sidecar_bytes = tensor_path.stat().st_size, sidecar_path.stat().st_size
    head_bytes = sum(b for name, b in payload.items() if name.startswith("head."))
    record = {"method": sidecar["method"], "method_name": sidecar["method_name"], "task": sidecar["task"],
              "path": str(tensor_path), "artifact_bytes": tensor_bytes + sidecar_bytes,
              "tensor_file_bytes": tensor_bytes, "sidecar_bytes": sidecar_bytes,
              "header_bytes": tensor_bytes - sum(payload.values()), "payload_bytes": payload,
              "head_bytes": head_bytes, "lower_bound_bytes": sidecar["lower_bound_bits"] / 8}
    meta = sidecar["meta"]
    if "diff" in meta:
        diff = meta["diff"]
        value_bits = torch.finfo(VALUE_DTYPES[diff["value_dtype"]]).bits
        k, numel = sum(diff["count"]), sum(diff["numel"])
        record.update(
            kind="sparse diff", nonzeros=k, covered=numel,
            positions_bytes=payload["diff.positions"],
            positions_bound_bytes=positions_lower_bound_bits(numel, k) / 8,
            positions_per_tensor_bound_bytes=sum(positions_lower_bound_bits(n, c) for n, c in
                                                 zip(diff["numel"], diff["count"])) / 8,
            values_bytes=payload["diff.values"], values_bound_bytes=k * value_bits / 8,
            schemes={s: diff["scheme"].count(s) for s in sorted(set(diff["scheme"]))})
    elif "masks" in meta or any(name.startswith("mask.") for name in tensors):
        masks_meta = next(v for v in meta.values() if isinstance(v, dict) and v.get("format", "").startswith(
            "taskstream.masks"))
        masks = unpack_masks(tensors, masks_meta)
        stored = next(name for name in tensors if name.startswith("mask."))
        coded = masks_meta["coding"] == "entropy"
        other, _ = pack_masks(masks, entropy_coded=not coded, key="mask")
        numel = sum(m.numel() for m in masks.values())
        ones = sum(int(m.sum()) for m in masks.values())
        record.update(
            kind="masks", coding=masks_meta["coding"], covered=numel, masked_out=numel - ones,
            positions_bytes=payload[stored],
            positions_bound_bytes=sum(positions_lower_bound_bits(m.numel(), int(m.sum())) for m in masks.values()) / 8,
            other_coding=("bits" if coded else "entropy"),
            other_coding_bytes=sum(t.numel() for t in other.values()))
    return record


def collect(paths: list[Path]) -> list[dict]:
    records = []
    for run_dir, _ in run_entries(paths):
        for tensor_path in sorted((run_dir / "artifacts").glob("*/*.safetensors")):
            record = artifact_record(tensor_path)
            if record is not None:
                records.append(record)
    return records


def summarise(records: list[dict]) -> list[dict]:
    out = []
    for method in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == method]
        mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
        ratio = [r["artifact_bytes"] / r["lower_bound_bytes"] for r in rows]
        summary = {"method": method, "kind": rows[0]["kind"], "artifacts": len(rows),
                   "artifact_bytes": mean("artifact_bytes"), "lower_bound_bytes": mean("lower_bound_bytes"),
                   "ratio_mean": statistics.fmean(ratio), "ratio_max": max(ratio),
                   "positions_bytes": mean("positions_bytes"), "positions_bound_bytes": mean("positions_bound_bytes"),
                   "header_bytes": mean("header_bytes"), "sidecar_bytes": mean("sidecar_bytes"),
                   "head_bytes": mean("head_bytes")}
        if rows[0]["kind"] == "sparse diff":
            summary.update(values_bytes=mean("values_bytes"), values_bound_bytes=mean("values_bound_bytes"),
                           positions_per_tensor_bound_bytes=mean("positions_per_tensor_bound_bytes"),
                           nonzeros=mean("nonzeros"))
        else:
            other = [(r["artifact_bytes"] - r["positions_bytes"] + r["other_coding_bytes"]) / r["lower_bound_bytes"]
                     for r in rows]
            summary.update(coding=rows[0]["coding"], other_coding=rows[0]["other_coding"],
                           other_coding_bytes=mean("other_coding_bytes"), other_coding_ratio_mean=statistics.fmean(other),
                           masked_out_fraction=statistics.fmean(r["masked_out"] / r["covered"] for r in rows))
        out.append(summary)
    return out


def markdown(summaries: list[dict], info: dict) -> str:
    lines = ["# Artifact bytes vs the information-theoretic lower bound (trained artifacts)", "",
             f"Command: `{info['command']}` ({info['artifacts']} artifacts from {', '.join(info['sources'])}).", "",
             "Bound: the ledger's `lower_bound_bytes` (positions `log2 C(N, k)` over all covered weights, or "
             "`sum log2 C(n, ones)` over the masks; values and head at their stored precision). Artifact: the "
             "tensor file plus the JSON sidecar, as the ledger counts it. Means over artifacts (one per "
             "task and seed).", "",
             "| method | artifacts | artifact bytes | bound bytes | artifact / bound | max | positions (or mask) bytes | "
             "their bound | per-tensor bound | values bytes | their bound | head | safetensors header | "
             "JSON sidecar |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        per_tensor = f"{s['positions_per_tensor_bound_bytes']:,.0f}" if "positions_per_tensor_bound_bytes" in s else ""
        values = f"{s['values_bytes']:,.0f} | {s['values_bound_bytes']:,.0f}" if "values_bytes" in s else " | "
        lines.append(f"| {s['method']} | {s['artifacts']} | {s['artifact_bytes']:,.0f} | {s['lower_bound_bytes']:,.0f} | "
                     f"{s['ratio_mean']:.3f} | {s['ratio_max']:.3f} | {s['positions_bytes']:,.0f} | "
                     f"{s['positions_bound_bytes']:,.0f} | {per_tensor} | {values} | {s['head_bytes']:,.0f} | "
                     f"{s['header_bytes']:,.0f} | {s['sidecar_bytes']:,.0f} |")
    masks = [s for s in summaries if s["kind"] == "masks"]
    if masks:
        lines += ["", "Masks in both codings (the same trained masks, re-packed):", "",
                  "| method | masked out | stored coding | artifact / bound | other coding | its mask bytes | "
                  "artifact / bound with it |", "|---|---:|---|---:|---|---:|---:|"]
        for s in masks:
            lines.append(f"| {s['method']} | {s['masked_out_fraction']:.2%} | {s['coding']} | {s['ratio_mean']:.3f} | "
                         f"{s['other_coding']} | {s['other_coding_bytes']:,.0f} | {s['other_coding_ratio_mean']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", type=Path, nargs="+", help="run or study directories with their tensor files")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.json")
    args = parser.parse_args(argv)
    records = collect(args.paths)
    if not records:
        raise SystemExit("No artifact with a lower bound (diff pruning, masking) under " + ", ".join(map(str, args.paths)))
    summaries = summarise(records)
    info = {"command": command_line("bench.artifact_bounds", argv),
            "artifacts": len(records), "sources": [str(p) for p in args.paths]}
    text = markdown(summaries, info)
    print(text)
    write_results(args.out, text, {"info": info, "methods": summaries, "artifacts": records})
    return summaries


if __name__ == "__main__":
    main()
