"""Calls from the orchestrator into plugins over the ``summit.plugin/v1`` protocol.

``Broker`` (``broker.py``) is the facade the services use; behind it the routing table
(``routes.py``), the guards (``guards.py``, ``breaker.py``, ``limits.py``), schema checks
(``schemas.py``), retries (``retries.py``), the wire format and error mapping (``wire.py``),
the fan-out modes (``modes.py``), event delivery (``event_delivery.py``) and the transport
seam (``transport.py``, with the per-endpoint leases of ``leases.py``). ``PluginClient``
(``client.py``) is the lifecycle's synchronous client for health, initialize and shutdown.
"""

from orchestrator.broker.broker import Broker
from orchestrator.broker.client import PluginClient, transport_for
from orchestrator.broker.errors import (
    InvalidAnswer,
    InvalidOutput,
    PluginCallError,
    PluginRejected,
    PluginTimeout,
    ResponseTooLarge,
)
from orchestrator.broker.limits import BrokerLimits
from orchestrator.broker.routes import Route
from orchestrator.broker.transport import (
    PluginTransport,
    TcpTransport,
    TransportFactory,
    UnixTransport,
    open_transport,
)

__all__ = [
    "Broker",
    "BrokerLimits",
    "InvalidAnswer",
    "InvalidOutput",
    "PluginCallError",
    "PluginClient",
    "PluginRejected",
    "PluginTimeout",
    "PluginTransport",
    "ResponseTooLarge",
    "Route",
    "TcpTransport",
    "TransportFactory",
    "UnixTransport",
    "open_transport",
    "transport_for",
]
