"""The layout of a run directory: the names the runner writes and every reader looks for.

    config.json     the run's resolved config (``stream.engine.config.RunConfig.to_dict``)
    versions.json   Python, platform and package versions of the run
    ledger.jsonl    one row per (method, step, evaluated task): :mod:`stream.core.ledger`
    artifacts/      ``<method>/<step>-<task>.{safetensors,json}``: :mod:`stream.core.store`
"""

CONFIG_FILE = "config.json"
VERSIONS_FILE = "versions.json"
LEDGER_FILE = "ledger.jsonl"
ARTIFACTS_DIR = "artifacts"
