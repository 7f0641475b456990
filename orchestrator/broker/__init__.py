"""Calls from the orchestrator into plugins over the ``summit.plugin/v1`` protocol."""

from orchestrator.broker.client import PluginCallError, PluginClient, transport_for
from orchestrator.broker.pool import Broker

__all__ = ["Broker", "PluginCallError", "PluginClient", "transport_for"]
