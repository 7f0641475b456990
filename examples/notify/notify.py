"""Notify: a workflow action that publishes an event for other plugins and webhooks."""

from summit_sdk import PluginContext, PluginError, Workflow, collect, workflow
from summit_sdk.points import WorkflowInput, WorkflowResult

PLUGIN_ID = "com.example.notify"
PLUGIN_VERSION = "1.0.0"
EVENT_TYPE = "notify.sent"


@workflow("notify")
class Notify(Workflow):
    """``{"action": "send", "params": {"channel": "ops", "message": "..."}}``."""

    def run(self, input: WorkflowInput, ctx: PluginContext) -> WorkflowResult:
        if input.action != "send":
            raise PluginError(
                f"unknown action {input.action!r}; expected 'send'", code="bad_action"
            )
        message = input.params.get("message")
        if not isinstance(message, str) or not message.strip():
            raise PluginError("params.message must be a non-empty string", code="invalid_input")
        channel = input.params.get("channel") or ctx.config.get("default_channel", "general")
        event_id = ctx.host.events.publish(EVENT_TYPE, {"channel": channel, "message": message})
        ctx.logger.info("published %s to %s", event_id, channel)
        return WorkflowResult(status="ok", result={"event_id": event_id, "channel": channel})


plugin = collect(__name__, permissions=["events:publish"])
