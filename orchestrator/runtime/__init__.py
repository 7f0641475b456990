"""Container backends behind the ``ContainerRuntime`` and ``ImageStore`` protocols (Docker by
default); endpoints typed in ``endpoints.py``."""

from orchestrator.runtime.base import (
    BuildProgress,
    ContainerRuntime,
    ContainerSpec,
    ContainerStatus,
    ImageInfo,
    ImageStore,
    RuntimeEvent,
)
from orchestrator.runtime.endpoints import Endpoint, TcpEndpoint, UnixEndpoint, parse_endpoint

__all__ = [
    "BuildProgress",
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerStatus",
    "Endpoint",
    "ImageInfo",
    "ImageStore",
    "RuntimeEvent",
    "TcpEndpoint",
    "UnixEndpoint",
    "parse_endpoint",
]
