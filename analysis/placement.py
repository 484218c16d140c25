"""Where a task's piece lands in the backbone: the fraction of each weight tensor a method changed.

The contract (what a method records, read here from the artifact sidecars)
-------------------------------------------------------------------------
A method whose task piece changes a subset of the pretrained weights (diff pruning, masking, ...) puts
into its :class:`~stream.core.store.ArtifactPayload` ``meta``::

    meta["placement"] = {"<parameter name>": [changed, total], ...}

- ``<parameter name>``: the pretrained tensor's name in ``backbone.encoder.named_parameters()``, without
  any method prefix (``encoder.layer.3.attention.self.query.weight``, ``embeddings.word_embeddings.weight``).
- ``changed``: how many entries of that tensor the task's model uses with a value different from the
  pretrained one: diff pruning, the nonzeros of the stored diff (after projection); masking, the entries
  masked out (set to zero). An integer, ``0 <= changed <= total``.
- ``total``: the tensor's number of entries (``numel``).
- List every tensor the method covers, including those with ``changed == 0``; a tensor that is not listed
  is one the method cannot change. The task head (dense, owned by the task) is not listed.

Figures show the fraction changed per layer (embeddings, block 0..L-1, pooler) and per kind of weight
(query, key, value, attention output, feed-forward in/out, LayerNorm, bias, embeddings), per task.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

PLACEMENT_KEY = "placement"
EMBEDDINGS, POOLER, OTHER = "embeddings", "pooler", "other"
# Column order of the figures.
KINDS = ["query", "key", "value", "attn_out", "ffn_in", "ffn_out", "LayerNorm", "bias", "embeddings", "pooler"]

_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h)\.(\d+)\.")
# (pattern on the name, kind) in priority order; BERT/RoBERTa/MiniLM names, then DistilBERT's.
_KIND_RULES = [
    (r"LayerNorm|layer_norm", "LayerNorm"),
    (r"\.bias$", "bias"),
    (r"attention\.self\.query|\.q_lin\.|\.q_proj\.", "query"),
    (r"attention\.self\.key|\.k_lin\.|\.k_proj\.", "key"),
    (r"attention\.self\.value|\.v_lin\.|\.v_proj\.", "value"),
    (r"attention\.output\.dense|\.out_lin\.|\.o_proj\.", "attn_out"),
    (r"intermediate\.dense|ffn\.lin1", "ffn_in"),
    (r"output\.dense|ffn\.lin2", "ffn_out"),
    (r"embeddings", "embeddings"),
    (r"pooler", "pooler"),
]


def describe_parameter(name: str) -> tuple[str, str]:
    """(layer, kind) of a backbone parameter name: ``("3", "query")``, ``("embeddings", "embeddings")``.

    Layers are block indices as strings, ``embeddings``, ``pooler``, or ``other``; kinds are those of
    :data:`KINDS`, or the tensor's own module name when no rule matches.
    """
    block = _BLOCK.search(name)
    if block:
        layer = block.group(1)
    elif "embeddings" in name:
        layer = EMBEDDINGS
    elif "pooler" in name:
        layer = POOLER
    else:
        layer = OTHER
    for pattern, kind in _KIND_RULES:
        if re.search(pattern, name):
            return layer, kind
    parts = name.split(".")
    return layer, parts[-2] if len(parts) > 1 else parts[-1]


def layer_order(layers) -> list[str]:
    """Embeddings first, then blocks bottom-up, then the pooler and anything else."""
    unique = list(dict.fromkeys(layers))
    blocks = sorted((l for l in unique if l.isdigit()), key=int)
    rest = [l for l in unique if not l.isdigit() and l not in (EMBEDDINGS, POOLER)]
    return ([EMBEDDINGS] if EMBEDDINGS in unique else []) + blocks + ([POOLER] if POOLER in unique else []) + rest


def _entries(placement: object, where: str) -> list[tuple[str, int, int]]:
    if not isinstance(placement, dict):
        raise ValueError(f"{where}: meta['placement'] must map parameter names to [changed, total]; "
                         f"got {type(placement).__name__}.")
    out = []
    for name, value in placement.items():
        ok = (isinstance(value, (list, tuple)) and len(value) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
              and 0 <= value[0] <= value[1] and value[1] > 0)
        if not ok:
            raise ValueError(f"{where}: meta['placement'][{name!r}] must be [changed, total] integers with "
                             f"0 <= changed <= total and total > 0; got {value!r}.")
        out.append((name, value[0], value[1]))
    return out


def load_placement(table: pd.DataFrame) -> pd.DataFrame:
    """Placement rows from the sidecars of every artifact in a tidy ledger table.

    One row per (run, method, step, parameter): ``task``, ``param``, ``layer``, ``kind``, ``changed``,
    ``total``, plus the configuration columns (``budget``, ``method_name``, ``setting``) when present.
    Artifacts without ``meta["placement"]`` contribute nothing; an empty frame means no method recorded it.
    """
    columns = ["run", "method", "budget", "method_name", "setting", "step", "task", "param", "layer", "kind",
               "changed", "total"]
    rows = []
    steps = table.drop_duplicates(["run", "method", "step"])
    for record in steps.to_dict("records"):
        sidecar_path = (Path(record["run"]) / record["artifact_path"]).with_suffix(".json")
        if not sidecar_path.exists():
            continue
        meta = json.loads(sidecar_path.read_text(encoding="utf-8")).get("meta", {})
        if PLACEMENT_KEY not in meta:
            continue
        for name, changed, total in _entries(meta[PLACEMENT_KEY], str(sidecar_path)):
            layer, kind = describe_parameter(name)
            rows.append({"run": record["run"], "method": record["method"], "budget": record.get("budget", ""),
                         "method_name": record.get("method_name", ""), "setting": record.get("setting", ""),
                         "step": record["step"], "task": record["task"], "param": name, "layer": layer,
                         "kind": kind, "changed": changed, "total": total})
    return pd.DataFrame(rows, columns=columns)


def placement_summary(placement: pd.DataFrame) -> pd.DataFrame:
    """Fraction changed per (method, budget, task, layer, kind), pooled over runs and tensors.

    ``fraction`` = sum of ``changed`` / sum of ``total``; ``runs`` counts the runs pooled.
    """
    keys = ["method", "budget", "task", "layer", "kind"]
    grouped = placement.groupby(keys, sort=False)
    out = grouped[["changed", "total"]].sum()
    out["runs"] = grouped["run"].nunique()
    out["fraction"] = out["changed"] / out["total"]
    return out.reset_index()
