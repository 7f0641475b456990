"""Signing: ``keygen`` (an Ed25519 key pair), ``sign`` (a detached signature of an image or a
plugin folder) and ``verify-signature``. The format and the checks are
:mod:`summit_sdk.signing`, the same code the orchestrator's trust store runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from summit_sdk.cli.errors import BAD_INPUT, CliError, reported
from summit_sdk.cli.images import docker_client, local_image
from summit_sdk.cli.render import out


def keygen(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the key pair")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing pair")] = False,
) -> None:
    """Create an Ed25519 signing key pair (PEM)."""
    from summit_sdk import signing

    with reported():
        try:
            private, public, kid = signing.generate_keypair(out_dir, overwrite=force)
        except FileExistsError as exc:
            raise CliError(f"{exc} (use --force to replace it)", BAD_INPUT) from None
        except OSError as exc:
            raise CliError(f"cannot write the keys: {exc}", BAD_INPUT) from None
        out.print(f"private key {private} (keep it secret)")
        out.print(f"public key  {public}")
        out.print(f"key id      {kid}")


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
    from summit_sdk import signing
    from summit_sdk.cli.manifest import load_manifest, manifest_from_label

    with reported():
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
            img = local_image(docker_client(), target)
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


def verify_signature(
    sig: Annotated[Path, typer.Argument(help="Signature file")],
    pub: Annotated[Path, typer.Option("--pub", help="Public key (PEM)")],
    image: Annotated[
        str | None, typer.Option("--image", help="Also check the digest of this local image")
    ] = None,
) -> None:
    """Check a detached signature with a public key."""
    from summit_sdk import signing

    with reported():
        try:
            envelope = json.loads(sig.read_text(encoding="utf-8"))
            public = signing.load_public_key(pub)
        except OSError as exc:
            raise CliError(f"cannot read {exc.filename}: {exc.strerror}", BAD_INPUT) from None
        except ValueError as exc:
            raise CliError(f"{sig} is not JSON: {exc}", BAD_INPUT) from None
        except signing.SignatureError as exc:
            raise CliError(str(exc), BAD_INPUT) from None
        digest = local_image(docker_client(), image).id if image else None
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
