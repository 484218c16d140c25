"""Every built-in method's options, one module per method module, importable without torch.

A run's method options are checked when its config is built (:class:`stream.engine.config.MethodSpec`), before
any torch, transformers or Avalanche import: a typo fails in a fraction of a second. ``methods.<name>`` (the
method itself, which needs torch) imports its config from ``methods.configs.<name>``.
"""
