import pytest
from summit_sdk import EXTENSION_POINTS, Plugin, create_plugin


def noop(input: object, ctx: object) -> None:
    return None


def test_build_collects_metadata_and_handlers() -> None:
    plugin = (
        create_plugin()
        .with_metadata(id="com.example.x", version="1.0.0", name="X", description="d")
        .request_permissions("read:data", "storage", "read:data")
        .with_config_schema({"type": "object"})
        .on_event("document.created", noop)
        .on_event("document.created", noop)
        .extension("analyzer", "a", noop)
        .extension("export", "e", noop)
        .build()
    )
    assert isinstance(plugin, Plugin)
    assert (plugin.id, plugin.version, plugin.name) == ("com.example.x", "1.0.0", "X")
    assert plugin.permissions == ("read:data", "storage")
    assert plugin.config_schema == {"type": "object"}
    assert len(plugin.event_handlers["document.created"]) == 2
    assert plugin.extension_handler("analyzer", "a") is noop
    assert plugin.extension_handler("analyzer", "e") is None
    assert list(plugin.extensions) == [("analyzer", "a"), ("export", "e")]


def test_unknown_extension_point_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown extension point 'analyser'"):
        create_plugin().extension("analyser", "a", noop)


def test_duplicate_extension_and_bad_handler_are_refused() -> None:
    builder = create_plugin().extension("workflow", "w", noop)
    with pytest.raises(ValueError, match="already registered"):
        builder.extension("workflow", "w", noop)
    with pytest.raises(TypeError):
        builder.extension("workflow", "other", "not callable")  # type: ignore[arg-type]


def test_built_plugin_does_not_change_with_the_builder() -> None:
    builder = create_plugin().extension("analyzer", "a", noop)
    plugin = builder.build()
    builder.extension("analyzer", "b", noop)
    assert list(plugin.extensions) == [("analyzer", "a")]


def test_every_design_extension_point_is_known() -> None:
    assert set(EXTENSION_POINTS) == {
        "data_source",
        "analyzer",
        "visualization",
        "export",
        "auth_provider",
        "workflow",
    }
