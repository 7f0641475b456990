"""Summit: a container-per-plugin orchestrator."""

__version__ = "0.1.0"
