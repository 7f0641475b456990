import sys
import types
from typing import Any

import pytest
from pydantic import BaseModel
from summit_sdk import (
    Analyzer,
    Plugin,
    PluginContext,
    analyzer,
    collect,
    create_plugin,
    export,
    on_event,
    on_initialize,
    on_shutdown,
    workflow,
)
from summit_sdk.points import AnalyzerInput, AnalyzerOutput
from summit_sdk.testing import PluginCallError, PluginTestClient


class Notes:
    """Handlers as methods: state lives on the instance collect() creates."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.stopped = False

    @on_initialize
    def setup(self, ctx: PluginContext) -> None:
        self.seen.append("init")

    @on_event("note.created")
    def remember(self, event: dict[str, Any], ctx: PluginContext) -> None:
        self.seen.append(event["payload"]["text"])

    @analyzer("count-notes")
    async def count(self, input: Any, ctx: PluginContext) -> dict[str, Any]:
        return {"notes": len(self.seen) - 1}

    @workflow("clear")
    def clear(self, input: Any, ctx: PluginContext) -> dict[str, Any]:
        self.seen[1:] = []
        return {"status": "ok"}

    @on_shutdown
    def stop(self, ctx: PluginContext) -> None:
        self.stopped = True


def test_collect_a_class_registers_methods_bound_to_one_instance() -> None:
    plugin = collect(Notes, id="com.example.notes", version="1.0.0")
    assert list(plugin.extensions) == [("analyzer", "count-notes"), ("workflow", "clear")]
    with PluginTestClient(plugin) as client:
        client.event("note.created", {"text": "hello"})
        client.event("note.other", {"text": "ignored"})
        assert client.call("analyzer", "count-notes", {}) == {"notes": 1}
        client.call("workflow", "clear", {})
        assert client.call("analyzer", "count-notes", {}) == {"notes": 0}


def test_collect_an_instance_uses_it_and_runs_shutdown() -> None:
    notes = Notes()
    client = PluginTestClient(collect(notes, id="com.example.notes", version="1.0.0"))
    assert notes.seen == ["init"]
    client.close()
    assert notes.stopped


def _module_with_handlers() -> types.ModuleType:
    module = types.ModuleType("summit_test_plugin_module")
    module.PLUGIN_ID = "com.example.mod"  # type: ignore[attr-defined]
    module.PLUGIN_VERSION = "2.0.0"  # type: ignore[attr-defined]

    def shout(input: Any, ctx: PluginContext) -> Any:
        return {"text": input["text"].upper()}

    def csv(input: Any, ctx: PluginContext) -> Any:
        return {"content": "a,b", "content_type": "text/csv", "filename": "x.csv"}

    for fn in (shout, csv):
        fn.__module__ = module.__name__
    module.shout = analyzer("shout")(shout)  # type: ignore[attr-defined]
    module.csv = export("csv")(csv)  # type: ignore[attr-defined]
    # Imported from elsewhere: must not become part of this plugin.
    module.foreign = analyzer("foreign")(lambda i, c: i)  # type: ignore[attr-defined]
    return module


def test_collect_a_module_by_object_or_name_reads_metadata_from_it() -> None:
    module = _module_with_handlers()
    sys.modules[module.__name__] = module
    try:
        by_name = Plugin.from_module(module.__name__)
    finally:
        del sys.modules[module.__name__]
    by_object = collect(module)
    for plugin in (by_name, by_object):
        assert (plugin.id, plugin.version) == ("com.example.mod", "2.0.0")
        assert list(plugin.extensions) == [("analyzer", "shout"), ("export", "csv")]
    with PluginTestClient(by_object) as client:
        assert client.call("analyzer", "shout", {"text": "hi"}) == {"text": "HI"}


def test_decorators_leave_functions_callable() -> None:
    @analyzer("double")
    def double(input: int, ctx: object) -> int:
        return input * 2

    assert double(2, None) == 4


def test_collect_without_handlers_is_refused() -> None:
    with pytest.raises(ValueError, match="no handlers"):
        collect(types.ModuleType("empty"))


def test_decorators_need_a_name() -> None:
    with pytest.raises(TypeError, match="name"):
        analyzer(lambda i, c: i)


class Text(BaseModel):
    text: str


class Length(BaseModel):
    length: int


def test_decorated_function_with_models_validates_input_and_output() -> None:
    class Handlers:
        @analyzer("length", input_model=Text, output_model=Length)
        def length(self, input: Text, ctx: PluginContext) -> Any:
            return {"length": len(input.text)} if input.text != "bad" else {"length": "many"}

    with PluginTestClient(collect(Handlers, id="com.example.len", version="1.0.0")) as client:
        assert client.call("analyzer", "length", {"text": "abc"}) == {"length": 3}
        with pytest.raises(PluginCallError) as refused:
            client.call("analyzer", "length", {"txt": "abc"})
        assert (refused.value.status, refused.value.code) == (400, "invalid_input")
        assert refused.value.details[0]["loc"] == ["text"]
        with pytest.raises(PluginCallError) as broken:
            client.call("analyzer", "length", {"text": "bad"})
        assert (broken.value.status, broken.value.code) == (500, "invalid_output")


@analyzer("typed")
class Typed(Analyzer):
    def analyze(self, input: AnalyzerInput, ctx: PluginContext) -> AnalyzerOutput:
        return AnalyzerOutput(findings=[])


def test_decorated_typed_class_is_instantiated() -> None:
    class Holder:
        typed = Typed

    plugin = collect(Holder, id="com.example.t", version="1.0.0")
    with PluginTestClient(plugin) as client:
        assert client.call("analyzer", "typed", {"text": "x"}) == {"findings": [], "summary": {}}


def test_builder_refuses_a_typed_extension_under_the_wrong_point() -> None:
    with pytest.raises(ValueError, match="analyzer, not a export"):
        create_plugin().extension("export", "x", Typed())
