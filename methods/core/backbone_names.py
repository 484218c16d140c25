"""How a run names its backbone and pooling, importable without torch (a config is checked before torch loads;
:mod:`methods.core.backbone` loads what these name)."""

DEFAULT_BACKBONE = "bundled:all-MiniLM-L6-v2"
POOLINGS = ("mean", "cls", "pooler")
