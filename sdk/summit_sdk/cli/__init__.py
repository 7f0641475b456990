"""``summit-plugin``: the command line of plugin authors (Typer + Rich).

Install with ``pip install 'summit-plugin-sdk[cli]'``. Errors are one line on stderr; the exit
status is 2 for bad input (arguments, files, manifests) and 1 for failures (a build, a failed
check, Docker).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from summit_sdk.spec import EXTENSION_POINTS

app = typer.Typer(
    name="summit-plugin",
    help="Create, build, verify, sign and push Summit plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

BAD_INPUT = 2
FAILURE = 1


class CliError(Exception):
    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int) -> NoReturn:
    one_line = " ".join(message.split())
    err.print(f"error: {one_line}", markup=False)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    from summit_sdk.cli.docker_ops import DockerError
    from summit_sdk.cli.introspect import IntrospectionError
    from summit_sdk.cli.manifest import ManifestError
    from summit_sdk.cli.remote import RemoteError

    try:
        yield
    except CliError as exc:
        _fail(str(exc), exc.code)
    except (ManifestError, IntrospectionError) as exc:
        _fail(str(exc), BAD_INPUT)
    except DockerError as exc:
        _fail(str(exc), FAILURE)
    except RemoteError as exc:
        where = f"the orchestrator refused: {exc} ({exc.code})" if exc.status else str(exc)
        _fail(where, BAD_INPUT if 400 <= exc.status < 500 else FAILURE)


def _docker() -> Any:
    from summit_sdk.cli import docker_ops

    return docker_ops.client()


def _image(docker: Any, ref: str) -> Any:
    import docker.errors as derr

    try:
        return docker.images.get(ref)
    except derr.ImageNotFound:
        raise CliError(f"image {ref} not found", BAD_INPUT) from None
    except derr.DockerException as exc:
        raise CliError(f"cannot inspect image {ref}: {exc}") from None


# --------------------------------------------------------------------------- new


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="Plugin name, e.g. keyword-finder")],
    point: Annotated[
        str, typer.Option("--point", "-p", help=f"Extension point: {', '.join(EXTENSION_POINTS)}")
    ] = "analyzer",
    directory: Annotated[
        Path, typer.Option("--dir", "-d", help="Folder in which the project folder is created")
    ] = Path("."),
) -> None:
    """Create a ready plugin project: code, plugin.yaml, tests and README."""
    from summit_sdk.cli import scaffold

    with _errors():
        try:
            scaffold.check_name(name)
            if point not in EXTENSION_POINTS:
                raise ValueError(
                    f"unknown extension point {point!r}; one of {', '.join(EXTENSION_POINTS)}"
                )
            target = directory / name
            files = scaffold.create(target, name, point)
        except (ValueError, FileExistsError) as exc:
            raise CliError(str(exc), BAD_INPUT) from None
        except OSError as exc:
            raise CliError(f"cannot write the project: {exc}", BAD_INPUT) from None
        out.print(f"created {point} plugin com.example.{name} in {target}")
        for path in files:
            out.print(f"  {path.relative_to(target)}")
        out.print(f"next: cd {target} && pytest && summit-plugin build .")


# --------------------------------------------------------------------------- build


@app.command()
def build(
    directory: Annotated[
        Path, typer.Argument(help="Plugin folder (plugin.yaml at its root)")
    ] = Path("."),
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Default summit-plugin/<id>:<version>")
    ] = None,
    base: Annotated[str, typer.Option("--base", help="Base image")] = "summit/plugin-python:latest",
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Skip checking the code against plugin.yaml")
    ] = False,
) -> None:
    """Build the plugin image the way the orchestrator does (after checking the code
    against plugin.yaml)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from summit_sdk.cli import docker_ops
    from summit_sdk.cli.manifest import load_manifest

    with _errors():
        if not directory.is_dir():
            raise CliError(f"{directory} is not a folder", BAD_INPUT)
        manifest = load_manifest(directory)
        if not (manifest.get("runtime") or {}).get("entrypoint"):
            raise CliError("plugin.yaml: runtime.entrypoint is required to build", BAD_INPUT)
        if not no_check:
            _check_code(directory, manifest)
        image_tag = tag or f"summit-plugin/{manifest['id']}:{manifest['version']}"
        docker = _docker()
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[step]}[/bold] {task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("starting", step="build", total=None)

            def show(line: str) -> None:
                if line.startswith("Step "):
                    step, _, rest = line.partition(" : ")
                    progress.update(task, step=step, description=rest[:100])
                    short = line if len(line) <= 120 else line[:117] + "..."
                    progress.console.print(short, style="dim", markup=False, highlight=False)
                else:
                    progress.update(task, description=line[:100])

            built = docker_ops.build_image(
                docker, directory, manifest, tag=image_tag, base=base, progress=show
            )
        out.print(f"built {built.tag}")
        out.print(f"image id {built.image_id}")


# --------------------------------------------------------------------------- manifest


def _plugin_folder(directory: Path) -> dict[str, Any]:
    from summit_sdk.cli.manifest import load_manifest

    if not directory.is_dir():
        raise CliError(f"{directory} is not a folder", BAD_INPUT)
    return load_manifest(directory)


def _check_code(directory: Path, manifest: dict[str, Any]) -> None:
    """Import the plugin as the runtime does and refuse a plugin.yaml that contradicts it."""
    from summit_sdk.cli import introspect

    entrypoint = (manifest.get("runtime") or {}).get("entrypoint")
    if not entrypoint:
        return  # a prebuilt image (runtime.image): no Python code to compare
    try:
        described = introspect.describe_folder(directory, entrypoint)
    except introspect.IntrospectionError as exc:
        raise CliError(
            f"{exc} (plugin.yaml is checked against the code, so the plugin's own requirements "
            "must be installed where summit-plugin runs; `build --no-check` skips the check)",
            BAD_INPUT,
        ) from None
    problems = introspect.compare(described, manifest)
    if problems:
        raise CliError(
            f"plugin.yaml does not match the code ({len(problems)} problem(s)): "
            + "; ".join(problems)
            + " (summit-plugin manifest --write updates plugin.yaml)",
            BAD_INPUT,
        )


@app.command()
def manifest(
    directory: Annotated[Path, typer.Argument(help="Plugin folder")] = Path("."),
    entrypoint: Annotated[
        str | None,
        typer.Option("--entrypoint", "-e", help="module:object (default: plugin.yaml's)"),
    ] = None,
    write: Annotated[bool, typer.Option("--write", "-w", help="Write plugin.yaml")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Only compare the code with plugin.yaml")
    ] = False,
) -> None:
    """Generate plugin.yaml from the plugin's code (the builder or decorators).

    What the code cannot know (resources, network, dependencies, authors) is kept from an
    existing plugin.yaml.
    """
    from summit_sdk.cli import introspect
    from summit_sdk.cli.manifest import check_manifest
    from summit_sdk.manifest_yaml import dump_manifest_yaml

    with _errors():
        if not directory.is_dir():
            raise CliError(f"{directory} is not a folder", BAD_INPUT)
        path = directory / "plugin.yaml"
        base: dict[str, Any] | None = None
        if path.is_file():
            base = _plugin_folder(directory)
        entry = entrypoint or ((base or {}).get("runtime") or {}).get("entrypoint")
        if check and base is not None and not entry:
            out.print(
                "plugin.yaml names no runtime.entrypoint (a prebuilt image): nothing to check"
            )
            return
        if not entry:
            raise CliError("no entrypoint: pass --entrypoint module:object", BAD_INPUT)
        if check:
            if base is None:
                raise CliError(f"{path} not found", BAD_INPUT)
            _check_code(directory, base)
            out.print(f"plugin.yaml matches the code of {entry}")
            return
        generated = introspect.generate(introspect.describe_folder(directory, entry), base, entry)
        problems = check_manifest(generated)
        if problems:
            raise CliError("the generated manifest is incomplete: " + "; ".join(problems))
        text = dump_manifest_yaml(generated, sort_keys=False, allow_unicode=True)
        if write:
            path.write_text(text, encoding="utf-8")
            err.print(f"wrote {path}")
        else:
            sys.stdout.write(text)


# --------------------------------------------------------------------------- test


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Plugin folder")] = Path("."),
) -> None:
    """Check the code against plugin.yaml, then run the plugin's tests with pytest (no
    Docker needed). Extra arguments go to pytest."""
    import importlib.util
    import subprocess

    from summit_sdk.console import INSTALL_HINT

    with _errors():
        _check_code(directory, _plugin_folder(directory))
    if importlib.util.find_spec("pytest") is None:
        _fail(f"summit-plugin test runs pytest, which is not installed: {INSTALL_HINT}", BAD_INPUT)
    done = subprocess.run([sys.executable, "-m", "pytest", *ctx.args], cwd=directory, check=False)
    raise typer.Exit(done.returncode)


# --------------------------------------------------------------------------- run


@app.command()
def run(
    image: Annotated[str, typer.Argument(help="Plugin image")],
) -> None:
    """Run the image in the sandbox; Ctrl-C stops and removes it."""
    from summit_sdk.cli import docker_ops
    from summit_sdk.cli.manifest import manifest_from_label
    from summit_sdk.cli.samples import SchemaSampleError, sample_from_schema

    with _errors():
        docker = _docker()
        manifest = manifest_from_label(_image(docker, image).labels, image)
        box = docker_ops.start_sandboxed(docker, image, manifest, "run")
        # SIGTERM behaves like Ctrl-C so the container is always cleaned up.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            _, seconds = docker_ops.wait_healthy(box)
            sock = box.socket_path
            out.print(
                f"{manifest['id']} {manifest['version']} healthy after {seconds * 1000:.0f} ms"
            )
            out.print(f"socket {sock}")
            out.print(f"curl --unix-socket {sock} http://plugin/summit/v1/health")
            for ext in manifest.get("extensions") or []:
                try:
                    sample = sample_from_schema(ext.get("input_schema") or {"type": "object"})
                except SchemaSampleError:
                    sample = {}
                body = json.dumps({"input": sample, "context": {"request_id": "r1"}})
                out.print(
                    f"curl --unix-socket {sock} -H 'content-type: application/json' "
                    f"-d {shlex.quote(body)} "
                    f"http://plugin/summit/v1/extensions/{ext['point']}/{ext['name']}"
                )
            err.print("logs follow; Ctrl-C stops and removes the container")
            for chunk in box.container.logs(stream=True, follow=True):
                sys.stderr.write(chunk.decode("utf-8", "replace"))
                sys.stderr.flush()
            state = box.state()
            raise CliError(f"the container exited with status {state.get('ExitCode')}")
        except KeyboardInterrupt:
            err.print("stopping")
            with contextlib.suppress(Exception):
                box.container.stop(timeout=5)
        finally:
            box.remove()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --------------------------------------------------------------------------- verify


@app.command()
def verify(
    image: Annotated[str, typer.Argument(help="Plugin image (any language)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Run the summit.plugin/v1 conformance suite against an image."""
    from summit_sdk.cli import conformance

    with _errors():
        docker = _docker()
        _image(docker, image)
        if as_json:
            report = conformance.run(docker, image)
            out.print_json(json.dumps(report.to_json()))
        else:
            with err.status(f"verifying {image}"):
                report = conformance.run(docker, image)
            table = Table(title=f"summit.plugin/v1 conformance: {image}")
            table.add_column("check")
            table.add_column("result")
            table.add_column("detail", overflow="fold")
            for check in report.checks:
                mark = "[green]pass[/green]" if check.ok else "[red]FAIL[/red]"
                table.add_row(check.name, mark, check.detail)
            out.print(table)
            if report.host_calls:
                out.print(f"host API calls: {', '.join(report.host_calls)}")
            failed = [c.name for c in report.checks if not c.ok]
            if failed:
                out.print(f"[red]failed:[/red] {', '.join(failed)}")
            else:
                out.print(f"[green]all {len(report.checks)} checks passed[/green]")
        if not report.passed:
            raise typer.Exit(FAILURE)


# --------------------------------------------------------------------------- signing


@app.command()
def keygen(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the key pair")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing pair")] = False,
) -> None:
    """Create an Ed25519 signing key pair (PEM)."""
    from summit_sdk.cli import signing

    with _errors():
        try:
            private, public, kid = signing.generate_keypair(out_dir, overwrite=force)
        except FileExistsError as exc:
            raise CliError(f"{exc} (use --force to replace it)", BAD_INPUT) from None
        except OSError as exc:
            raise CliError(f"cannot write the keys: {exc}", BAD_INPUT) from None
        out.print(f"private key {private} (keep it secret)")
        out.print(f"public key  {public}")
        out.print(f"key id      {kid}")


@app.command()
def sign(
    target: Annotated[str, typer.Argument(help="Plugin image, or a plugin folder (bundle)")],
    key: Annotated[Path, typer.Option("--key", "-k", help="Private key (PEM)")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Signature file")] = Path(
        "sig.json"
    ),
    days: Annotated[float, typer.Option("--days", help="Validity in days")] = 365,
) -> None:
    """Sign an image (manifest facts + image digest) or a plugin folder (manifest facts +
    sha256 of every file the bundle carries), detached (Ed25519)."""
    from summit_sdk.cli import signing
    from summit_sdk.cli.manifest import load_manifest, manifest_from_label

    with _errors():
        if days <= 0:
            raise CliError("--days must be positive", BAD_INPUT)
        try:
            private = signing.load_private_key(key)
        except OSError as exc:
            raise CliError(f"cannot read {key}: {exc.strerror}", BAD_INPUT) from None
        except signing.SignatureError as exc:
            raise CliError(str(exc), BAD_INPUT) from None
        folder = Path(target)
        if folder.is_dir():
            manifest = load_manifest(folder)
            document = signing.make_document(
                manifest,
                image_digest=None,
                files=signing.bundle_files(folder),
                public=private.public_key(),
                valid_days=days,
            )
            what = f"{len(document['files'])} files of {folder}"
        else:
            img = _image(_docker(), target)
            manifest = manifest_from_label(img.labels, target)
            document = signing.make_document(
                manifest, image_digest=img.id, public=private.public_key(), valid_days=days
            )
            what = img.id
        envelope = signing.sign_document(document, private)
        out_file.write_text(json.dumps(envelope, indent=2, sort_keys=True) + "\n")
        out.print(f"signed {document['plugin_id']} {document['version']} ({what})")
        out.print(f"key id {document['key_id']}, expires {document['expires_at']}")
        out.print(f"signature {out_file}")


@app.command("verify-signature")
def verify_signature(
    sig: Annotated[Path, typer.Argument(help="Signature file")],
    pub: Annotated[Path, typer.Option("--pub", help="Public key (PEM)")],
    image: Annotated[
        str | None, typer.Option("--image", help="Also check the digest of this local image")
    ] = None,
) -> None:
    """Check a detached signature with a public key."""
    from summit_sdk.cli import signing

    with _errors():
        try:
            envelope = json.loads(sig.read_text(encoding="utf-8"))
            public = signing.load_public_key(pub)
        except OSError as exc:
            raise CliError(f"cannot read {exc.filename}: {exc.strerror}", BAD_INPUT) from None
        except ValueError as exc:
            raise CliError(f"{sig} is not JSON: {exc}", BAD_INPUT) from None
        except signing.SignatureError as exc:
            raise CliError(str(exc), BAD_INPUT) from None
        digest = _image(_docker(), image).id if image else None
        try:
            doc = signing.verify_signature(
                envelope, public, now=datetime.now(UTC), image_digest=digest
            )
        except signing.SignatureError as exc:
            raise CliError(f"signature invalid: {exc}") from None
        out.print(
            f"valid signature of {doc.get('plugin_id')} {doc.get('version')} "
            f"({doc.get('image_digest')}) by key {doc.get('key_id')}, "
            f"expires {doc.get('expires_at')}"
        )


# --------------------------------------------------------------------------- push


@app.command()
def push(
    image: Annotated[str, typer.Argument(help="Local plugin image")],
    ref: Annotated[str, typer.Argument(help="Target, e.g. 127.0.0.1:5000/team/name:1.0.0")],
) -> None:
    """Tag the image as REF and push it to its registry."""
    with _errors():
        _push(image, ref)


# --------------------------------------------------------------------------- publish, dev

UrlOption = Annotated[
    str | None, typer.Option("--url", help="Orchestrator (default $SUMMIT_URL or :8700)")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Admin token (default $SUMMIT_ADMIN_TOKEN)")
]
ApproveOption = Annotated[
    list[str] | None, typer.Option("--approve", help="Approve a permission (repeatable)")
]
ApproveAllOption = Annotated[
    bool, typer.Option("--approve-all", help="Approve every permission the plugin requests")
]
ConfigOption = Annotated[str, typer.Option("--config", help="Plugin config (JSON object)")]


def _install_options(
    manifest: dict[str, Any], approve: list[str] | None, approve_all: bool, config: str
) -> tuple[list[str], dict[str, Any]]:
    try:
        parsed = json.loads(config)
    except ValueError as exc:
        raise CliError(f"--config is not JSON: {exc}", BAD_INPUT) from None
    if not isinstance(parsed, dict):
        raise CliError("--config must be a JSON object", BAD_INPUT)
    approved = list(manifest.get("permissions") or []) if approve_all else list(approve or [])
    return approved, parsed


def _push(image: str, ref: str) -> str | None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from summit_sdk.cli import docker_ops

    if "/" not in ref or ref.startswith("/"):
        raise CliError(f"REF must name a registry repository, got {ref!r}", BAD_INPUT)
    repo, tag = docker_ops.split_ref(ref)
    docker = _docker()
    img = _image(docker, image)
    if not img.tag(repo, tag=tag):
        raise CliError(f"cannot tag {image} as {ref}")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=err,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def show(chunk: dict[str, Any]) -> None:
            layer = chunk.get("id")
            status = str(chunk.get("status") or "")
            if not layer or layer == tag:
                return
            detail = chunk.get("progressDetail") or {}
            if layer not in tasks:
                tasks[layer] = progress.add_task(f"{layer} {status}", total=None)
            progress.update(
                tasks[layer],
                description=f"{layer} {status}",
                completed=detail.get("current") or 0,
                total=detail.get("total") or None,
            )

        digest = docker_ops.push_image(docker, f"{repo}:{tag}", show)
    out.print(f"pushed {repo}:{tag}" + (f" ({digest})" if digest else ""))
    return digest


@app.command()
def publish(
    image: Annotated[str, typer.Argument(help="Local plugin image")],
    ref: Annotated[str, typer.Argument(help="Target, e.g. 127.0.0.1:5000/team/name:1.0.0")],
    url: UrlOption = None,
    token: TokenOption = None,
    approve: ApproveOption = None,
    approve_all: ApproveAllOption = False,
    config: ConfigOption = "{}",
    enable: Annotated[bool, typer.Option("--enable", help="Enable it after install")] = False,
) -> None:
    """Push the image to its registry, then install it into an orchestrator from there."""
    from summit_sdk.cli.manifest import manifest_from_label
    from summit_sdk.cli.remote import Orchestrator

    with _errors():
        manifest = manifest_from_label(_image(_docker(), image).labels, image)
        approved, parsed = _install_options(manifest, approve, approve_all, config)
        with Orchestrator(url, token) as remote:
            remote.check()
            _push(image, ref)
            installed = remote.install_image(ref, approved=approved, config=parsed)
            out.print(f"installed {installed['id']} {manifest['version']} ({installed['state']})")
            if enable:
                enabled = remote.lifecycle(installed["id"], "enable")
                out.print(f"{enabled['id']} is {enabled['state']}")


@app.command()
def dev(
    directory: Annotated[Path, typer.Argument(help="Plugin folder")] = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
    approve_all: Annotated[
        bool, typer.Option("--approve-all/--no-approve-all", help="Approve requested permissions")
    ] = True,
    config: ConfigOption = "{}",
    interval: Annotated[float, typer.Option("--interval", help="Seconds between scans")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Deploy once and exit")] = False,
) -> None:
    """Deploy the folder into a running orchestrator and hot-reload it on every change.

    Each deploy installs the source as version X.Y.Z-dev.N (so the orchestrator keeps its
    rule: one build per version) and reloads the plugin: the old container serves until the
    new one is healthy.
    """
    from summit_sdk.cli.remote import Orchestrator

    with _errors():
        # A bad folder or option fails at once, before any watching.
        _install_options(_plugin_folder(directory), None, approve_all, config)
        with Orchestrator(url, token) as remote:
            remote.check()
            try:
                _watch(directory, remote, approve_all, config, interval, once)
            except KeyboardInterrupt:
                err.print("stopped")  # the orchestrator finishes any reload it was asked for


def _watch(
    directory: Path, remote: Any, approve_all: bool, config: str, interval: float, once: bool
) -> None:
    import time

    from summit_sdk.cli.introspect import IntrospectionError
    from summit_sdk.cli.manifest import ManifestError
    from summit_sdk.cli.remote import RemoteError

    seen = _snapshot(directory)
    while True:
        try:
            _deploy(directory, remote, approve_all, config)
        except (CliError, RemoteError, ManifestError, IntrospectionError) as exc:
            if once:
                raise
            # Keep watching: the author fixes the file and saves again.
            err.print(f"deploy failed: {' '.join(str(exc).split())}", markup=False)
        if once:
            return
        err.print(f"watching {directory} (Ctrl-C stops)")
        while (now := _snapshot(directory)) == seen:
            time.sleep(interval)
        seen = now


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    from summit_sdk.imagebuild import source_files

    found = {}
    for path in source_files(directory):
        try:
            st = path.stat()
        except OSError:
            continue  # removed while scanning: the next scan sees it
        found[path.relative_to(directory).as_posix()] = (st.st_mtime_ns, st.st_size)
    return found


def _deploy(directory: Path, remote: Any, approve_all: bool, config: str) -> None:
    import time

    from summit_sdk.cli.remote import bundle

    started = time.monotonic()
    manifest = _plugin_folder(directory)
    _check_code(directory, manifest)
    approved, parsed = _install_options(manifest, None, approve_all, config)
    base_version = str(manifest["version"]).split("-", 1)[0].split("+", 1)[0]
    # Strictly increasing across runs of `dev`, and below the release X.Y.Z itself.
    version = f"{base_version}-dev.{time.time_ns() // 1_000_000}"
    data = bundle(directory, {**manifest, "version": version})
    plugin_id = manifest["id"]
    err.print(f"deploying {plugin_id} {version}")
    remote.install_bundle(data, approved=approved, config=parsed)
    current = remote.get(plugin_id) or {}
    state = current.get("state")
    if state == "ACTIVE":
        done = remote.lifecycle(plugin_id, "reload")
    elif state in ("LOADED", "FAILED"):
        done = remote.lifecycle(plugin_id, "enable")
    else:
        done = current
    out.print(
        f"{plugin_id} {done.get('version')} is {done.get('state')} "
        f"({time.monotonic() - started:.1f} s)"
    )


def main() -> None:  # pragma: no cover - console entry point
    app()
