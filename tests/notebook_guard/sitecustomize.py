"""Loaded at start-up by every Python process of the notebook tests (first on ``PYTHONPATH``).

Activates `notebook_network_guard` when ``$NOTEBOOK_NETWORK_LOG`` is set, so the notebook kernel
and the subprocesses it launches (``python -m training.train``) cannot reach the network.
"""

import os

if os.environ.get("NOTEBOOK_NETWORK_LOG"):
    import notebook_network_guard

    notebook_network_guard.install()
