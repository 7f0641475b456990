"""``summit-plugin``: the command line of plugin authors; this module holds the Typer ``app`` and
the registration of its commands, each group in its own module.

- ``project``: new, manifest, test (the plugin's folder and its ``plugin.yaml``)
- ``images``: build, run, verify (the plugin's image on this machine)
- ``signatures``: keygen, sign, verify-signature
- ``deploy``: push, publish, dev (to a registry and a running orchestrator, through
  :mod:`summit_sdk.client`)

Beside them: ``render`` (what is printed), ``errors`` (one-line failures and exit statuses), and
the work itself in ``docker_ops``, ``introspect``, ``scaffold``, ``conformance`` and
``samples``.

Install with ``pip install 'summit-plugin-sdk[cli]'``. Errors are one line on stderr; the exit
status is 2 for bad input (arguments, files, manifests) and 1 for failures (a build, a failed
check, Docker).
"""

from __future__ import annotations

import typer

from summit_sdk.cli import deploy, images, project, signatures

__all__ = ["app"]

app = typer.Typer(
    name="summit-plugin",
    help="Create, build, verify, sign and push Summit plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The order here is the order of `summit-plugin --help`.
app.command()(project.new)
app.command()(images.build)
app.command()(project.manifest)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    project.test
)
app.command()(images.run)
app.command()(images.verify)
app.command()(signatures.keygen)
app.command()(signatures.sign)
app.command("verify-signature")(signatures.verify_signature)
app.command()(deploy.push)
app.command()(deploy.publish)
app.command()(deploy.dev)
