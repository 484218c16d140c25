"""The method-wide test matrix: every registered method variant that shared properties are checked on.

A new method adds its row(s) here; ``tests/test_method_matrix.py`` runs every shared check on every row,
and a test fails if a registered method has no row at all.
"""

MATRIX = [
    ("full", {}),
    ("last_layer", {"k": 1}),
    ("last_layer", {"k": 2}),
    ("linear_probe", {}),
    ("adapters", {"bottleneck": 8}),
    ("adapters", {"bottleneck": 64, "train_layer_norms": False}),
    ("lora", {}),
    ("lora", {"rank": 4, "target_modules": "query+key+value+attention.output.dense"}),
    ("ia3", {}),
    ("ia3", {"target_modules": "query+intermediate.dense", "feedforward_modules": "intermediate.dense"}),
    ("masking", {}),
    ("masking", {"entropy_coded": False}),
    ("masking", {"train_head": False}),
    ("bitfit", {}),
    ("sequential", {}),
    ("sequential", {"tuned_blocks": 1, "model_selection": True}),
    ("ewc", {}),
    ("ewc", {"ewc_mode": "separate", "tuned_blocks": 1}),
    ("lwf", {}),
    ("replay", {"mem_size": 12}),
    ("diff_pruning", {}),
    ("diff_pruning", {"structured_penalty": "product", "l0_control": "fixed", "value_dtype": "float16"}),
    ("diff_pruning_unstructured", {}),
    ("diff_pruning_nonadaptive", {}),
]


def row_id(row) -> str:
    name, options = row
    return "-".join([name] + [f"{k}={v}" for k, v in sorted(options.items())])
