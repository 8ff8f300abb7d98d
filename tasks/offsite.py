"""Off-site copies of backups in S3 (or anything speaking its API): a lost host must not
take its backups with it.

The dump and its manifest go to `s3://<bucket>/<bucket_folder>/<backup_id>.*` after
the backup is verified; the dump carries its sha256 as object metadata and its size
is checked after the upload. A restore on a host that lost its backup directory
finds the manifests in the bucket, downloads the dump, and checks its sha256 before
anything runs. The client is boto3, made by prefect-aws's `AwsCredentials`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.backup import BackupManifest
from tasks.core.errors import BackupError
from tasks.core.redact import redact

if TYPE_CHECKING:  # prefect-aws and boto3 cost ~2 s to import: only when a bucket is used
    from prefect_aws import S3Bucket


def _aws_errors() -> tuple[type[Exception], ...]:
    """What boto3 raises; its transfer layer (upload_file, download_file) wraps client errors."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, Boto3Error)


def _secrets(bucket: S3Bucket) -> list[str]:
    creds: Any = bucket.credentials
    out = []
    for field in ("aws_secret_access_key", "aws_session_token"):
        value = getattr(creds, field, None)
        if value is not None:
            out.append(value.get_secret_value())
    return out


def _key(bucket: S3Bucket, name: str) -> str:
    folder = (bucket.bucket_folder or "").strip("/")
    return f"{folder}/{name}" if folder else name


def uri(bucket: S3Bucket, name: str) -> str:
    return f"s3://{bucket.bucket_name}/{_key(bucket, name)}"


def _client(bucket: S3Bucket) -> Any:
    return bucket.credentials.get_client("s3")


def _error(bucket: S3Bucket, what: str, exc: Exception) -> BackupError:
    return BackupError(
        f"{what}: {redact(str(exc), _secrets(bucket))}",
        hint="check the off-site S3 bucket block: bucket name, credentials, endpoint",
    )


def upload(bucket: S3Bucket, directory: Path, manifest: BackupManifest) -> BackupManifest:
    """Dump first, checked by size, then the manifest naming where it went: a manifest in
    the bucket always has its dump there."""
    s3 = _client(bucket)
    dump_key = _key(bucket, manifest.file)
    try:
        s3.upload_file(
            str(directory / manifest.file),
            bucket.bucket_name,
            dump_key,
            ExtraArgs={"Metadata": {"sha256": manifest.sha256}},
        )
        head = s3.head_object(Bucket=bucket.bucket_name, Key=dump_key)
    except _aws_errors() as exc:
        raise _error(bucket, f"uploading {manifest.backup_id}", exc) from exc
    if head["ContentLength"] != manifest.bytes or head["Metadata"].get("sha256") != manifest.sha256:
        raise BackupError(
            f"the off-site copy of {manifest.backup_id} has {head['ContentLength']} bytes,"
            f" not {manifest.bytes}",
            hint="the upload was damaged; the local backup is intact, run the backup again",
        )
    placed = manifest.model_copy(update={"offsite": uri(bucket, manifest.file)})
    try:
        s3.put_object(
            Bucket=bucket.bucket_name,
            Key=_key(bucket, f"{manifest.backup_id}.json"),
            Body=placed.model_dump_json(indent=2).encode(),
            ContentType="application/json",
        )
    except _aws_errors() as exc:
        raise _error(bucket, f"uploading the manifest of {manifest.backup_id}", exc) from exc
    return placed


def remote_backups(bucket: S3Bucket) -> list[BackupManifest]:
    """Every manifest in the bucket's folder, oldest first (unreadable ones skipped)."""
    s3 = _client(bucket)
    prefix = _key(bucket, "")
    out = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket.bucket_name, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith(".json"):
                    continue
                body = s3.get_object(Bucket=bucket.bucket_name, Key=obj["Key"])["Body"].read()
                try:
                    out.append(BackupManifest.model_validate_json(body))
                except ValueError:
                    continue
    except _aws_errors() as exc:
        raise _error(bucket, "listing off-site backups", exc) from exc
    return sorted(out, key=lambda m: m.taken_at)


def download(bucket: S3Bucket, directory: Path, manifest: BackupManifest) -> None:
    """Bring a backup back into the directory (dump as .partial, renamed when whole;
    the caller checks its sha256 before using it)."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{manifest.file}.partial"
    try:
        _client(bucket).download_file(bucket.bucket_name, _key(bucket, manifest.file), str(partial))
    except _aws_errors() as exc:
        partial.unlink(missing_ok=True)
        raise _error(bucket, f"downloading {manifest.backup_id}", exc) from exc
    partial.replace(directory / manifest.file)
    (directory / f"{manifest.backup_id}.json").write_text(manifest.model_dump_json(indent=2))


def delete(bucket: S3Bucket, manifest: BackupManifest) -> None:
    """Manifest first, as locally: never a listed backup without its dump."""
    s3 = _client(bucket)
    try:
        for name in (f"{manifest.backup_id}.json", manifest.file):
            s3.delete_object(Bucket=bucket.bucket_name, Key=_key(bucket, name))
    except _aws_errors() as exc:
        raise _error(bucket, f"deleting the off-site copy of {manifest.backup_id}", exc) from exc
