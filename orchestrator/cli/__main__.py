"""``python -m orchestrator.cli``: the ``summit`` command without its console script."""

from orchestrator.cli import app

app()
