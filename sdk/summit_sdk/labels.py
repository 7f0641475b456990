"""The Docker labels Summit puts on plugin images and containers, spelled in one place.

The orchestrator (``orchestrator/runtime``), ``summit-plugin`` and the benchmarks all read and
write them, and an image built by one is read by the other, so they are part of the contract
the SDK owns.
"""

from typing import Final

__all__ = [
    "LABEL_ENDPOINT",
    "LABEL_MANIFEST",
    "LABEL_OWNER",
    "LABEL_PLUGIN",
    "LABEL_PLUGIN_DIR",
    "LABEL_SOURCE_DIGEST",
    "LABEL_VERSION",
]

# On plugin images.
LABEL_MANIFEST: Final = "io.summit.plugin"  # the manifest as JSON, read without running the image
LABEL_SOURCE_DIGEST: Final = "io.summit.source-digest"  # what it was built from (no rebuild)
# Where the plugin's own code is in the image (default: its WORKDIR, else /plugin): the
# orchestrator's image scan reads it.
LABEL_PLUGIN_DIR: Final = "io.summit.plugin-dir"

# On plugin containers.
LABEL_OWNER: Final = "io.summit.owner"  # which orchestrator (or tool) created it
LABEL_PLUGIN: Final = "io.summit.plugin-id"
LABEL_VERSION: Final = "io.summit.plugin-version"
LABEL_ENDPOINT: Final = "io.summit.endpoint"  # where the plugin protocol is served
