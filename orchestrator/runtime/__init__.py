"""Container backends behind one ``ContainerRuntime`` protocol (Docker by default)."""

from orchestrator.runtime.base import (
    BuildProgress,
    ContainerRuntime,
    ContainerSpec,
    ContainerStatus,
    ImageInfo,
    RuntimeEvent,
)

__all__ = [
    "BuildProgress",
    "ContainerRuntime",
    "ContainerSpec",
    "ContainerStatus",
    "ImageInfo",
    "RuntimeEvent",
]
