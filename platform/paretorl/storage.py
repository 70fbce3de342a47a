"""Where a sweep's files live: a local folder or object storage (`s3://bucket/prefix`).

Every reader and writer of sweep files (the record, the data splits, base policies, Ray Train and
Tune storage, the trials' record) goes through these functions. A local path behaves as plain
file I/O; a URI goes through pyarrow's filesystem for its scheme. For `s3://` the endpoint is
$AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL when set (a MinIO or moto server; boto3 and so MLflow
read the same variables), credentials and region come from the usual AWS variables.

Code that needs a local directory (transformers, vLLM) asks `local_copy`, which mirrors a
remote folder into a node-local cache once and re-downloads only files that changed.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

LOCAL_CACHE_ENV = "PARETORL_LOCAL_CACHE"  # node-local scratch for copies of remote folders


def is_uri(path: str | os.PathLike) -> bool:
    """True for object-store URIs (s3://, gs://, ...); False for local paths and file:// URIs."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def resolve(path: str | os.PathLike) -> str:
    """A URI without its trailing slash, or an absolute local path (Tune changes a trial's cwd)."""
    return str(path).rstrip("/") if is_uri(path) else str(Path(path).expanduser().resolve())


def join(base: str | os.PathLike, *parts: str) -> str:
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).joinpath(*parts))


def filesystem(path: str | os.PathLike):
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs as pafs

    if not is_uri(path):
        return pafs.LocalFileSystem(), resolve(path)
    scheme, rest = str(path).split("://", 1)
    if scheme == "s3":
        return _s3(), rest.rstrip("/")
    return pafs.FileSystem.from_uri(str(path))


def _s3():
    import pyarrow.fs as pafs

    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


def ray_storage(path: str | os.PathLike) -> dict:
    """`storage_path` (and `storage_filesystem` for a URI) for a Ray Train or Tune RunConfig."""
    if not is_uri(path):
        return {"storage_path": resolve(path)}
    fs, inner = filesystem(path)
    return {"storage_path": inner, "storage_filesystem": fs}


def in_store_of(base: str | os.PathLike, path: str) -> str:
    """`path` as a pyarrow filesystem reports it (`bucket/key` for S3, as Ray reports checkpoint
    paths) turned into a URI with the scheme of `base` when `base` is a URI; else `path` unchanged."""
    if not is_uri(base) or is_uri(path):
        return path
    return f"{str(base).split('://', 1)[0]}://{path.lstrip('/')}"


def exists(path: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def is_empty(path: str | os.PathLike) -> bool:
    """True when nothing exists at or under `path`."""
    import pyarrow.fs as pafs

    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type == pafs.FileType.File:
        return False
    return not fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True, recursive=False))


def read_text(path: str | os.PathLike) -> str:
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as f:
        return f.read().decode()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a whole file; readers see the old or the new content, never a part.

    Locally through a temporary sibling and a rename; an object-store PUT is atomic by itself.
    """
    if not is_uri(path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return
    fs, inner = filesystem(path)
    with fs.open_output_stream(inner) as f:
        f.write(text.encode())


def upload(local_dir: str | os.PathLike, dest: str | os.PathLike, last: str | None = None) -> None:
    """Copy the files of `local_dir` to `dest` (a URI or a local folder); the file named `last` is
    copied after all others, so its presence means the copy is complete."""
    import pyarrow.fs as pafs

    local = pafs.LocalFileSystem()
    fs, inner = filesystem(dest)
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
    fs.create_dir(inner, recursive=True)
    for p in sorted(files, key=lambda p: p.name == last):
        target = f"{inner}/{p.relative_to(local_dir).as_posix()}"
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(p), target, source_filesystem=local, destination_filesystem=fs)


def local_copy(path: str | os.PathLike) -> Path:
    """A local folder with the files under `path`: the folder itself when local, else a node-local
    mirror under $PARETORL_LOCAL_CACHE (default ~/.cache/paretorl/local) that is brought up to date:
    a file is downloaded only when it is missing or differs in size or modification time.

    Files are written under a temporary name and renamed, so processes on one node that copy the
    same folder at once never see a partial file.
    """
    import pyarrow.fs as pafs

    if not is_uri(path):
        return Path(resolve(path))
    fs, inner = filesystem(path)
    infos = [i for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True)) if i.type == pafs.FileType.File]
    if not infos:
        raise FileNotFoundError(f"{path}: no files there")
    out = local_cache_root() / "downloads" / hashlib.sha256(resolve(path).encode()).hexdigest()[:16]
    for info in infos:
        dest = out / info.path[len(inner) :].lstrip("/")
        stamp = info.mtime_ns or 0
        if dest.is_file() and dest.stat().st_size == info.size and dest.stat().st_mtime_ns == stamp:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        pafs.copy_files(info.path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        os.utime(tmp, ns=(stamp, stamp))
        tmp.replace(dest)
    return out


def local_cache_root() -> Path:
    return Path(os.environ.get(LOCAL_CACHE_ENV) or Path.home() / ".cache" / "paretorl" / "local")


def cached_dir(cache_root: str | os.PathLike, name: str, build: Callable[[Path], str], marker: str, label: str, log=print) -> str | Path:
    """The cache entry `cache_root/name`, made by `build(folder)` unless it exists (its `marker`
    file is there). For a local cache this is the folder itself (a Path); for a URI cache the entry
    is built in a temporary local folder and uploaded with the marker last (the URI is returned).

    `build` returns what to log about the entry it made; a found entry is logged as `label` cached.
    """
    import tempfile

    if not is_uri(cache_root):
        out = Path(cache_root) / name
        if (out / marker).exists():
            log(f"{label} cached at {out}")
        else:
            log(f"{build(out)}, saved to {out}")
        return out
    dest = join(cache_root, name)
    if exists(join(dest, marker)):
        log(f"{label} cached at {dest}")
        return dest
    with tempfile.TemporaryDirectory(prefix="paretorl-build-") as tmp:
        out = Path(tmp) / name
        message = build(out)
        upload(out, dest, last=marker)
    log(f"{message}, saved to {dest}")
    return dest
