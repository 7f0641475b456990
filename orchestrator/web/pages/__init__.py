"""The UI's pages, one module per area; each has its own ``router`` (route class
:class:`~orchestrator.web.guard.UiRoute`), joined under ``/ui`` by ``web/router.py``."""
