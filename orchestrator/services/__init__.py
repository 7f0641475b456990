"""Use cases. ``lifecycle.py`` is the only writer of plugin state."""
