"""What a plugin image holds, checked as a source plugin is: its own code through the static
scanner, its installed packages through the advisory database.

It works on a folder holding the image's extracted files (``ImageStore.extract_filesystem``,
given ``selector`` so that only what is read here is extracted) and finds:

- the plugin's own code: the folder the image's ``io.summit.plugin-dir`` label names, else its
  WORKDIR, else ``/plugin`` (where the Summit base images keep it). Its Python files and
  native modules go through ``scanner.scan_source``, the same checks a bundle gets. A plugin
  folder that is missing or is a symbolic link is a HIGH finding: code that cannot be found
  cannot be checked, and is not let through as clean.
- installed Python distributions: every ``*.dist-info/METADATA`` (and ``*.egg-info``, which
  Debian's own Python packages use) in a ``site-packages`` or ``dist-packages`` folder, and any
  ``*.dist-info`` inside the plugin folder (``pip install --target``). Name and Version are
  read from the metadata headers.
- installed Node packages: every ``package-lock.json`` and ``npm-shrinkwrap.json`` outside a
  ``node_modules`` folder (a dependency's own lockfile does not say what was installed), and
  npm's hidden lockfile ``node_modules/.package-lock.json``. Lockfile versions 2 and 3 list
  packages in ``packages`` under ``node_modules/...`` keys; version 1 nests them in
  ``dependencies``. Linked workspace folders are local code, not releases, and are skipped.

Each distinct (ecosystem, name, version) is checked once, with every place it was seen. The
scanner reads Python only: a Node plugin's JavaScript is not analysed, its packages are.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from summit_sdk.imagebuild import IGNORED
from summit_sdk.labels import LABEL_PLUGIN_DIR

from orchestrator.security.advisories import (
    AdvisoryDatabase,
    DependencyReport,
    Ecosystem,
    PackagePin,
    check_pins,
)
from orchestrator.security.scanner import SCAN_ERROR, Finding, scan_source

__all__ = [
    "DEFAULT_PLUGIN_DIR",
    "LABEL_PLUGIN_DIR",
    "ImageContents",
    "find_node_packages",
    "find_python_packages",
    "plugin_dir_of",
    "scan_image_contents",
    "selector",
]

DEFAULT_PLUGIN_DIR = "/plugin"
# An image whose code is not in its WORKDIR says where it is with this label.

# What scan_source reads of a plugin folder: Python files and native modules.
_CODE_SUFFIXES = (".py", ".so", ".pyd")
_PACKAGE_DIRS = frozenset({"site-packages", "dist-packages"})
_LOCKFILES = frozenset({"package-lock.json", "npm-shrinkwrap.json"})
_HIDDEN_LOCKFILE = ".package-lock.json"
# Metadata headers come first and are short; a lockfile of a large app is a few MB.
_MAX_METADATA_BYTES = 1024 * 1024
_MAX_LOCKFILE_BYTES = 64 * 1024 * 1024
_MAX_LOCATIONS = 5  # places listed per package in the report
_NODE_MODULES_KEY = re.compile(r"(?:^|/)node_modules/((?:@[^/]+/)?[^/]+)$")


@dataclass
class ImageContents:
    """The outcome of one image's scan."""

    plugin_dir: str
    findings: list[Finding] = field(default_factory=list)
    dependencies: list[DependencyReport] = field(default_factory=list)
    code_files: int = 0
    python_packages: int = 0
    node_packages: int = 0


def plugin_dir_of(labels: Mapping[str, str], workdir: str | None) -> str:
    """Where the image keeps the plugin's own code, as a normalised absolute path."""
    for candidate in (labels.get(LABEL_PLUGIN_DIR), workdir):
        if candidate and candidate.startswith("/"):
            path = posixpath.normpath(candidate)
            if path != "/" and ".." not in path.split("/"):
                # "/" would make every file in the image the plugin's code.
                return path.replace("//", "/")
    return DEFAULT_PLUGIN_DIR


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _is_python_metadata(parts: Sequence[str], plugin_parts: Sequence[str]) -> bool:
    if len(parts) >= 2 and parts[-2].endswith(".dist-info") and parts[-1] == "METADATA":
        in_packages = len(parts) >= 3 and parts[-3] in _PACKAGE_DIRS
        return in_packages or _under(parts, plugin_parts)
    if len(parts) >= 3 and parts[-2].endswith(".egg-info") and parts[-1] == "PKG-INFO":
        return parts[-3] in _PACKAGE_DIRS
    # An egg-info that is a single file (distutils installs) holds PKG-INFO itself.
    return len(parts) >= 2 and parts[-1].endswith(".egg-info") and parts[-2] in _PACKAGE_DIRS


def _is_lockfile(parts: Sequence[str]) -> bool:
    if not parts:
        return False
    if parts[-1] == _HIDDEN_LOCKFILE:
        return len(parts) >= 2 and parts[-2] == "node_modules"
    return parts[-1] in _LOCKFILES and "node_modules" not in parts[:-1]


def _under(parts: Sequence[str], folder: Sequence[str]) -> bool:
    return len(parts) > len(folder) and list(parts[: len(folder)]) == list(folder)


def selector(plugin_dir: str) -> Callable[[str, bool], bool]:
    """The ``PathSelector`` for ``extract_filesystem``: the folders down to and inside the
    plugin folder, the code files in it, package metadata and lockfiles anywhere."""
    plugin_parts = _parts(plugin_dir)

    def wanted(path: str, directory: bool) -> bool:
        parts = _parts(path)
        if directory:
            # The plugin folder itself, so that an empty one reads as present.
            return parts == plugin_parts[: len(parts)] or _under(parts, plugin_parts)
        if _under(parts, plugin_parts) and parts[-1].endswith(_CODE_SUFFIXES):
            return not any(p in IGNORED for p in parts[len(plugin_parts) :])
        return _is_python_metadata(parts, plugin_parts) or _is_lockfile(parts)

    return wanted


# -- Python ---------------------------------------------------------------------------------


def find_python_packages(root: Path, *, plugin_dir: str = DEFAULT_PLUGIN_DIR) -> list[PackagePin]:
    """Every installed distribution under ``root`` (an image's extracted files)."""
    plugin_parts = _parts(plugin_dir)
    found: list[tuple[str, str, str]] = []
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        if not _is_python_metadata(_parts(rel), plugin_parts):
            continue
        headers = _metadata_headers(path)
        name, version = headers.get("Name"), headers.get("Version")
        if name and version:
            found.append((name.strip(), version.strip(), "/" + rel))
    return _merged("PyPI", found)


def _metadata_headers(path: Path) -> Mapping[str, str]:
    with path.open("rb") as stream:
        data = stream.read(_MAX_METADATA_BYTES)
    text = data.decode("utf-8", "replace")
    # The headers end at the first blank line; the description after it can be long.
    head = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    message = HeaderParser().parsestr(head + "\n")
    return {key: str(value) for key, value in message.items()}


# -- Node -----------------------------------------------------------------------------------


def find_node_packages(root: Path) -> list[PackagePin]:
    """Every package the npm lockfiles under ``root`` say is installed."""
    found: list[tuple[str, str, str]] = []
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        if not _is_lockfile(_parts(rel)):
            continue
        found.extend((name, version, "/" + rel) for name, version in _lockfile_packages(path))
    return _merged("npm", found)


def _lockfile_packages(path: Path) -> Iterator[tuple[str, str]]:
    if path.stat().st_size > _MAX_LOCKFILE_BYTES:
        return
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        return
    if not isinstance(data, dict):
        return
    packages = data.get("packages")
    if isinstance(packages, dict):
        yield from _packages_map(packages)  # lockfile v2 and v3
        return
    dependencies = data.get("dependencies")
    if isinstance(dependencies, dict):
        yield from _dependencies_tree(dependencies)  # lockfile v1


def _packages_map(packages: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for key, entry in packages.items():
        if not isinstance(entry, dict) or entry.get("link"):
            continue
        match = _NODE_MODULES_KEY.search(key)
        if match is None:
            continue  # "" is the project itself; other keys are workspace folders
        version = entry.get("version")
        if not isinstance(version, str):
            continue
        name = entry.get("name")
        # An aliased install (npm:real@1.0) records the real name in "name".
        yield (name if isinstance(name, str) and name else match.group(1)), version


def _dependencies_tree(
    dependencies: Mapping[str, Any], depth: int = 0
) -> Iterator[tuple[str, str]]:
    if depth > 64:
        return  # npm nests only where versions conflict; deeper is a crafted file
    for name, entry in dependencies.items():
        if not isinstance(entry, dict):
            continue
        version = entry.get("version")
        if isinstance(version, str):
            if version.startswith("npm:"):
                # An alias: "npm:real-name@1.2.3".
                real, _, aliased = version[4:].rpartition("@")
                if real:
                    name, version = real, aliased
            yield name, version
        nested = entry.get("dependencies")
        if isinstance(nested, dict):
            yield from _dependencies_tree(nested, depth + 1)


# -- both -----------------------------------------------------------------------------------


def _files(root: Path) -> Iterator[Path]:
    # The extraction writes only folders and regular files; never follow anything else.
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def _merged(ecosystem: Ecosystem, found: Sequence[tuple[str, str, str]]) -> list[PackagePin]:
    by_pin: dict[tuple[str, str], list[str]] = {}
    for name, version, location in found:
        key = (canonicalize_name(name) if ecosystem == "PyPI" else name, version)
        places = by_pin.setdefault(key, [])
        if location not in places:
            places.append(location)
    return [
        PackagePin(ecosystem, name, version, tuple(places[:_MAX_LOCATIONS]))
        for (name, version), places in sorted(by_pin.items())
    ]


def scan_image_contents(
    root: Path,
    *,
    plugin_dir: str,
    network_access: bool,
    db: AdvisoryDatabase | None,
    links: Mapping[str, str] | None = None,
    unresolved: Sequence[str] = (),
) -> ImageContents:
    """Scan the extracted image under ``root``.

    ``links`` and ``unresolved`` are the extraction's (``ImageFilesystem``): a plugin folder
    that is a symbolic link, and a plugin file that was a hard link whose content could not
    be read, are findings. Without ``db`` every package is reported unchecked.
    """
    out = ImageContents(plugin_dir=plugin_dir)
    links = links or {}
    plugin_parts = _parts(plugin_dir)
    code = root.joinpath(*plugin_parts)
    linked = next(
        (p for p in (plugin_dir, *_ancestors(plugin_dir)) if p in links),
        None,
    )
    if linked is not None:
        message = (
            f"{linked} is a symbolic link in the image (to {links[linked]!r}); the plugin's "
            "code is not followed through it, so it cannot be checked"
        )
        out.findings.append(Finding(plugin_dir, 0, SCAN_ERROR, "HIGH", None, message))
    elif not code.is_dir():
        message = (
            f"the image has no folder {plugin_dir} for the plugin's code; set WORKDIR or the "
            f"{LABEL_PLUGIN_DIR} label to where it is"
        )
        out.findings.append(Finding(plugin_dir, 0, SCAN_ERROR, "HIGH", None, message))
    else:
        prefix = plugin_dir.rstrip("/") + "/"
        for finding in scan_source(code, network_access=network_access):
            out.findings.append(_relocated(finding, prefix))
        out.code_files = sum(1 for p in code.rglob("*") if p.is_file())
    prefix = plugin_dir.rstrip("/") + "/"
    for path in unresolved:
        if path.startswith(prefix) and path.endswith(_CODE_SUFFIXES):
            message = "a hard link to a file the scan did not read: its content is not checked"
            out.findings.append(Finding(path, 0, SCAN_ERROR, "HIGH", None, message))

    pins = find_python_packages(root, plugin_dir=plugin_dir) + find_node_packages(root)
    out.python_packages = sum(1 for p in pins if p.ecosystem == "PyPI")
    out.node_packages = len(pins) - out.python_packages
    out.dependencies = check_pins(pins, db)
    return out


def _ancestors(path: str) -> Iterator[str]:
    parts = _parts(path)
    for i in range(len(parts) - 1, 0, -1):
        yield "/" + "/".join(parts[:i])


def _relocated(finding: Finding, prefix: str) -> Finding:
    """The finding with its file named by its path in the image."""
    return Finding(
        prefix + finding.file,
        finding.line,
        finding.rule,
        finding.severity,
        finding.confidence,
        finding.message,
    )
