"""Events: the durable event log and the in-process bus (``bus.py``)."""

from orchestrator.events.bus import Event, EventBus, Subscription

__all__ = ["Event", "EventBus", "Subscription"]
