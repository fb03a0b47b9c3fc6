"""Import this module to register every built-in experiment (TF Model Garden's pattern).

`training.configs` holds the registry and `training.experiments` fills it; the entry points
(`training.train`, `training.eval`) import this module explicitly, so the config module never
imports the experiments that import it. A project adds its own experiments by importing its
module next to this one.

Example:
>>> import training.registry_imports
>>> from training.configs import registered_experiments
>>> "digits_nfnet" in registered_experiments()
True
"""

from training import experiments  # noqa: F401  (registers the built-in experiments)
