"""Fault 7 in-process: a version whose image was removed from the host is built again from
the source kept at install, or pulled again (and must be the same image), before it starts:
on enable, on a restart after a crash, at reload. When neither is possible, 409
``image_missing`` says to install the plugin again."""

from __future__ import annotations

import json
import tarfile

import pytest
import yaml

from orchestrator.domain.errors import Conflict
from orchestrator.runtime.base import LABEL_MANIFEST
from orchestrator.services.install import InstallRequest
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from tests.fixtures.plugins import PLUGINS

from .conftest import BASE_IMAGE, Services

PID = "com.summit-tests.probe"
REMOTE = "127.0.0.1:5000/summit-tests/probe:1.0.0"


def _version(services: Services, plugin_id: str = PID) -> tuple[str, str | None, str | None]:
    with session_scope(services.engine) as session:
        row = crud.get_version(session, plugin_id=plugin_id, version="1.0.0")
        assert row is not None
        return row.image, row.image_id, row.source_digest


def _installed_and_stopped(services: Services) -> str:
    services.install(PID)
    services.lifecycle.enable(PID)
    services.lifecycle.disable(PID)
    image_id = _version(services)[1]
    assert image_id is not None
    return image_id


def _restored(services: Services) -> list[str]:
    return [e["payload"]["how"] for e in services.announced(PID, "plugin.image_restored")]


def test_enable_rebuilds_a_pruned_image_from_the_kept_source(services: Services) -> None:
    old_id = _installed_and_stopped(services)
    tag = _version(services)[0]
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))
    assert services.runtime.image(old_id) is None

    services.lifecycle.enable(PID)

    assert services.state(PID) == "ACTIVE"
    assert services.runtime.builds == [tag, tag]  # at install, and again now
    image, image_id, _ = _version(services)
    # Same source, same base: the same content-addressed tag; the version runs the new id.
    assert image == tag and image_id != old_id
    assert services.runtime.status(services.container(PID)).image == image_id  # type: ignore[union-attr]
    assert _restored(services) == ["rebuilt"]


def test_a_restart_after_a_crash_rebuilds_too(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    cid = services.container(PID)
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))  # in use: kept while it runs
    services.supervision.on_runtime_event(services.runtime.crash(cid))
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))  # gone once the container is

    services.timers.fire_last()

    assert services.state(PID) == "ACTIVE" and _restored(services) == ["rebuilt"]


def test_reload_to_an_upgrade_whose_image_was_pruned_rebuilds_it(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    view = services.install(PID, version="1.1.0")
    assert view.pending_version == "1.1.0"
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))  # 1.1.0 runs nowhere yet

    services.lifecycle.reload(PID)

    running = services.runtime.status(services.container(PID))
    assert running is not None and running.version == "1.1.0"
    assert services.state(PID) == "ACTIVE" and _restored(services) == ["rebuilt"]


def test_a_new_base_image_gives_a_new_tag_and_the_version_follows(services: Services) -> None:
    old_id = _installed_and_stopped(services)
    old_tag = _version(services)[0]
    services.runtime.prune()  # the base image too
    services.runtime.add_image(BASE_IMAGE)  # rebuilt: a new id

    services.lifecycle.enable(PID)

    tag, image_id, digest = _version(services)
    assert tag != old_tag and tag.startswith(f"summit-plugin/{PID}:1.0.0-")
    assert image_id != old_id and services.runtime.image(tag) is not None
    # The kept source is still found under the digest it was kept by.
    assert (services.settings.state_dir / "sources" / f"{digest}.tar.gz").is_file()
    services.lifecycle.disable(PID)
    services.lifecycle.uninstall(PID)
    assert services.runtime.image(tag) is None  # the rebuilt image goes with the plugin


def test_without_its_kept_source_enable_is_a_409_that_says_install_again(
    services: Services,
) -> None:
    _installed_and_stopped(services)
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))
    for kept in (services.settings.state_dir / "sources").iterdir():
        kept.unlink()

    with pytest.raises(Conflict) as refused:
        services.lifecycle.enable(PID)

    assert refused.value.code == "image_missing"
    assert refused.value.message.startswith(
        f"the image of {PID} 1.0.0 was removed from this host and cannot be rebuilt or pulled"
    )
    assert refused.value.message.endswith("install the plugin again")
    assert services.state(PID) == "FAILED" and not services.runtime.containers


def test_a_kept_source_that_is_not_what_was_installed_is_never_built(
    services: Services,
) -> None:
    _installed_and_stopped(services)
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))
    [kept] = (services.settings.state_dir / "sources").glob("*.tar.gz")
    # Another plugin's files under this one's digest.
    with tarfile.open(kept, "w:gz") as tar:
        for path in (PLUGINS / "probe").iterdir():
            if path.is_file():
                tar.add(path, arcname=path.name)
        tar.add(PLUGINS / "hang" / "plugin.yaml", arcname="extra.yaml")
    builds = list(services.runtime.builds)

    with pytest.raises(Conflict) as refused:
        services.lifecycle.enable(PID)

    assert refused.value.code == "image_missing"
    assert "does not match its digest" in refused.value.message
    assert services.runtime.builds == builds


def _manifest_label() -> dict[str, str]:
    """What ``summit-plugin build`` labels a plugin image with: its manifest as JSON."""
    manifest = yaml.safe_load((PLUGINS / "probe" / "plugin.yaml").read_text())
    return {LABEL_MANIFEST: json.dumps(manifest)}


def _install_from_registry(services: Services) -> str:
    published = services.runtime.publish(REMOTE, labels=_manifest_label())
    view = services.installs.install(InstallRequest(image=REMOTE))
    assert view.state == "LOADED"
    services.lifecycle.enable(PID)
    services.lifecycle.disable(PID)
    return published.id


def test_a_pulled_image_is_pulled_again_by_its_reference(services: Services) -> None:
    image_id = _install_from_registry(services)
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))

    services.lifecycle.enable(PID)

    assert services.runtime.pulls == [REMOTE, REMOTE]
    assert services.runtime.status(services.container(PID)).image == image_id  # type: ignore[union-attr]
    assert _version(services)[:2] == (REMOTE, image_id)
    assert _restored(services) == ["pulled"]


def test_a_reference_that_now_names_another_image_is_refused(services: Services) -> None:
    image_id = _install_from_registry(services)
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))
    moved = services.runtime.publish(REMOTE, labels={})  # the tag was pushed over

    with pytest.raises(Conflict) as refused:
        services.lifecycle.enable(PID)

    assert refused.value.code == "image_changed"
    assert refused.value.details == {"image": REMOTE, "installed": image_id, "pulled": moved.id}
    assert services.state(PID) == "FAILED" and not services.runtime.containers


def test_a_reference_the_registry_lost_is_image_missing(services: Services) -> None:
    _install_from_registry(services)
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))
    services.runtime.registry.clear()

    with pytest.raises(Conflict) as refused:
        services.lifecycle.enable(PID)

    assert refused.value.code == "image_missing"
    assert "cannot be pulled" in refused.value.message


def test_a_local_image_named_by_hand_cannot_be_pulled_again(services: Services) -> None:
    services.runtime.add_image("probe-local:1", labels=_manifest_label())
    services.installs.install(InstallRequest(image="probe-local:1"))
    services.runtime.prune(keep=frozenset({BASE_IMAGE}))

    with pytest.raises(Conflict) as refused:
        services.lifecycle.enable(PID)

    assert refused.value.code == "image_missing"
    assert "names no registry" in refused.value.message
    assert services.runtime.pulls == ["probe-local:1"]  # only the install's
