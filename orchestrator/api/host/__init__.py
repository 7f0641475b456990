"""The host API (``/host/v1``): what plugins call, served apart from the admin API.

``app.py`` holds the routes; ``server.py`` listens on one unix socket per plugin container (in
the folder mounted at ``/run/summit``), so a plugin can reach this API and nothing else of the
orchestrator.
"""

from orchestrator.api.host.app import create_host_app
from orchestrator.api.host.server import HostGateway, HostServer

__all__ = ["HostGateway", "HostServer", "create_host_app"]
