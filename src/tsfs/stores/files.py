"""Where a store's bytes live: a local directory, or an fsspec URL (s3://, gs://, memory://).

The store addresses everything by *keys*: ``/``-separated names relative to the store's root
(``features/<fp>/commits/<segment>.json``). :class:`Files` maps keys onto one of two places,
and both keep the store's one promise — a segment is visible exactly when its commit record is:

* :class:`LocalFiles` (a path, or a ``file://`` URL): a new segment's directory is created
  under a hidden name, ``flock``-ed and renamed into place, so ``gc`` tells a live writer from
  a dead one by its lock; records are written to a temp file, fsynced and renamed over their
  name; every file of a segment is fsynced before the commit record is written (all at once
  from a few threads: the file system then commits them together, ~10x sooner than one
  fsync after another).
* :class:`RemoteFiles` (any other fsspec URL): nothing relies on rename or locks, which
  object stores do not have. A segment's chunk objects are written under its unique id first;
  the commit record is then written as one whole object (a PUT replaces an object atomically:
  readers see all of it or nothing). Without locks, ``gc`` can only tell a dead writer by age:
  it removes uncommitted segments created longer ago than a grace period (an hour by default).

Credentials for remote stores come from the environment as fsspec's back-ends read them
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` for an
S3-compatible server, ``GOOGLE_APPLICATION_CREDENTIALS`` …); tsfs never prints or stores them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tsfs.errors import (
    InputError,
    StoreAccessError,
    StoreCorruptError,
    StoreError,
    StoreReadOnlyError,
)

__all__ = ["Files", "LocalFiles", "RemoteFiles", "is_url", "open_files"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(://|::)")


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a store by URL (``s3://…``, ``file://…``) rather than a path."""
    return isinstance(location, str) and bool(_URL.match(location))


# A store URL missing one of its slashes (s3:/bucket, s3//bucket) reads as a local path.
_MISTYPED_URL = re.compile(r"^(s3a?|gs|gcs|az|abfs|hdfs|https?|memory)(:/(?!/)|//)", re.I)


def open_files(location: str | os.PathLike[str]) -> Files:
    """The :class:`Files` for a store path or URL; ``file://`` URLs are local paths."""
    if not is_url(location):
        if isinstance(location, str) and (typo := _MISTYPED_URL.match(location)):
            raise InputError(
                f"store {location!r} looks like a mistyped URL; write "
                f"{typo.group(1).lower()}://… (or ./{location} for a local directory)"
            )
        return LocalFiles(Path(location))
    url = str(location)
    if url.startswith("file://"):
        return LocalFiles(Path(url.removeprefix("file://")))
    return RemoteFiles(url)


class Files(ABC):
    """Reads and writes of keys relative to one store root.

    Attributes:
        url: how a person names the store (its path, or its URL).
        address: how another process names it, wherever it runs (an absolute path, or the
            URL): a relative path would name a store in that process's own directory.
        grace_s: how old an uncommitted segment must be before ``gc`` may remove it.
    """

    url: str
    address: str
    grace_s: float

    @abstractmethod
    def where(self, key: str) -> str:
        """The path or URL of ``key``, for messages."""

    @abstractmethod
    def read(self, key: str, limit: int | None = None) -> bytes:
        """The bytes of ``key`` (at most ``limit``); FileNotFoundError when it does not exist."""

    @abstractmethod
    def read_array(self, key: str) -> npt.NDArray[np.uint8]:
        """The bytes of ``key`` as a writable uint8 array; FileNotFoundError when missing."""

    @abstractmethod
    def write(self, key: str, *parts: bytes | memoryview) -> None:
        """Write a new file of ``parts`` concatenated (durable only after :meth:`sync_tree`)."""

    @abstractmethod
    def write_atomic(self, key: str, data: bytes) -> None:
        """Write ``key`` so that readers see the old contents or all of ``data``."""

    @abstractmethod
    def list(self, key: str) -> list[str]:
        """Names directly under ``key`` (empty when there is nothing there)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a file or a non-empty directory exists at ``key``."""

    @abstractmethod
    def is_file(self, key: str) -> bool: ...

    @abstractmethod
    def remove(self, key: str) -> None:
        """Remove one file (nothing when it is already gone)."""

    @abstractmethod
    def remove_tree(self, key: str) -> None:
        """Remove everything under ``key`` (nothing when it is already gone)."""

    @abstractmethod
    def age(self, key: str, now: float) -> float | None:
        """Seconds since ``key`` last changed; None when it is gone."""

    @abstractmethod
    def usage(self, key: str) -> tuple[int, int]:
        """(bytes, files) under ``key``."""

    @abstractmethod
    def zarr_store(self) -> Any:
        """A read-only zarr store over the root, for zarr's own readers."""

    @abstractmethod
    def new_segment(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Context in which a writer fills the new segment directory ``key``."""

    @abstractmethod
    def is_locked(self, key: str) -> bool:
        """Whether a live writer holds the segment at ``key``."""

    @abstractmethod
    def exclusive(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Context held by one process at a time per directory ``key`` (others wait), where
        the store can lock; elsewhere it excludes nothing."""

    @abstractmethod
    def writable(self) -> bool:
        """Whether the store may be written (as far as can be known before writing)."""

    @abstractmethod
    def mkdir(self, key: str) -> None:
        """Make directory ``key`` and its parents (object stores have no directories)."""

    def sync_tree(self, key: str) -> None:  # noqa: B027 (object stores: every PUT is durable)
        """Make every file written under ``key`` durable, before a commit record names them."""


def _read_failure(path: Path, e: OSError) -> StoreError:
    """A file of the store that cannot be read: a directory where a file belongs (or a file
    where a directory does) is a damaged store; anything else is the machine's answer."""
    if isinstance(e, NotADirectoryError | IsADirectoryError):
        return StoreCorruptError(
            f"cannot read {path}: {e.strerror} (the store's layout is damaged)"
        )
    return StoreError(f"cannot read {path}: {e.strerror}")


# --------------------------------------------------------------------------------------------
# a local directory


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_THREADS = 16
_sync_pool: tuple[int, ThreadPoolExecutor] | None = None
_sync_lock = threading.Lock()


def _fsync_all(paths: list[str]) -> None:
    """fsync files and directories from a few threads at once.

    One fsync waits for one journal commit (~3 ms here); fsyncs in flight together share
    commits, so a 134-file segment takes ~40 ms instead of ~500 ms. The pool belongs to the
    process that made it (a forked worker makes its own).
    """
    global _sync_pool
    with _sync_lock:
        if _sync_pool is None or _sync_pool[0] != os.getpid():
            _sync_pool = (os.getpid(), ThreadPoolExecutor(_SYNC_THREADS, "tsfs-fsync"))
        pool = _sync_pool[1]
    for _ in pool.map(_fsync_dir, paths):  # re-raises the first failure (EIO, ENOSPC)
        pass


class LocalFiles(Files):
    """A store in a local directory: flock-ed segment directories, fsync, atomic renames."""

    grace_s = 10.0

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)
        self.address = str(root.absolute())

    def path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def where(self, key: str) -> str:
        return str(self.path(key))

    def read(self, key: str, limit: int | None = None) -> bytes:
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                return f.read(-1 if limit is None else limit)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise _read_failure(path, e) from e

    def read_array(self, key: str) -> npt.NDArray[np.uint8]:
        # One readinto a numpy buffer: no intermediate bytes object.
        path = self.path(key)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                buf = np.empty(size, dtype=np.uint8)
                got = f.readinto(buf.data)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise _read_failure(path, e) from e
        return buf[:got]

    def write(self, key: str, *parts: bytes | memoryview) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for p in parts:
                f.write(p)

    def write_atomic(self, key: str, data: bytes) -> None:
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk or an interrupt: leave no temp
                tmp.unlink()
            raise
        _fsync_dir(path.parent)

    def list(self, key: str) -> list[str]:
        try:
            return os.listdir(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def is_file(self, key: str) -> bool:
        return self.path(key).is_file()

    def remove(self, key: str) -> None:
        path = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            _fsync_dir(path.parent)

    def remove_tree(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)

    def age(self, key: str, now: float) -> float | None:
        try:
            return now - self.path(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def usage(self, key: str) -> tuple[int, int]:
        path = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            if path.is_file():
                return path.stat().st_size, 1
        total = files = 0
        for root, _dirs, names in os.walk(path):
            for n in names:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(root, n)).st_size
                    files += 1
        return total, files

    def zarr_store(self) -> Any:
        from zarr.storage import LocalStore

        return LocalStore(self.root, read_only=True)

    @contextlib.contextmanager
    def new_segment(self, key: str) -> Iterator[None]:
        """Create the directory and hold an exclusive ``flock`` on it while a writer fills it.

        The directory is made under a hidden name, locked, then renamed into place (the lock
        follows the inode), so a segment directory is never visible unlocked while its writer
        lives: ``gc`` can tell a live writer from a dead one without any grace period.
        """
        path = self.path(key)
        hidden = path.with_name(f".{path.name}")
        hidden.parent.mkdir(parents=True, exist_ok=True)
        hidden.mkdir()
        fd = os.open(hidden, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            hidden.rename(path)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        # an flock on the directory itself: no lock file to leave behind, and a holder that
        # dies releases it
        fd = os.open(self.path(key), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def is_locked(self, key: str) -> bool:
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def writable(self) -> bool:
        """Mode bits say so and the file system is not read-only.

        The mode bits are honoured even for root, who bypasses them: ``chmod a-w STORE`` is
        how a person says "do not write here".
        """
        st = self.root.stat()
        if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return False
        return os.access(self.root, os.W_OK)

    def mkdir(self, key: str) -> None:
        self.path(key).mkdir(parents=True, exist_ok=True)

    def sync_tree(self, key: str) -> None:
        top = self.path(key)
        paths = [str(top.parent)]  # the entry that the segment's rename made
        for root, _dirs, names in os.walk(top):
            paths.append(root)
            paths.extend(os.path.join(root, n) for n in names)
        _fsync_all(paths)


# --------------------------------------------------------------------------------------------
# an fsspec URL


_SEGMENT_TIME_DIGITS = 16


class RemoteFiles(Files):
    """A store at an fsspec URL. Objects are written whole; nothing is renamed or locked."""

    # No locks on object stores: an uncommitted segment is only known dead by its age.
    grace_s = 3600.0

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError as e:  # pragma: no cover - fsspec is a dependency of tsfs
            raise InputError("stores at URLs need fsspec: pip install fsspec") from e
        self.url = self.address = url.rstrip("/")
        try:
            self._fs, self.root = fsspec.url_to_fs(self.url)
        except (ImportError, ValueError) as e:
            scheme = self.url.split(":", 1)[0]
            hint = {"s3": "tsfs[s3]", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs"}.get(scheme)
            raise InputError(
                f"cannot open store URL {self.url}: {e}"
                + (f" (pip install '{hint}')" if hint else "")
            ) from e
        self.root = self.root.rstrip("/")
        self._pid = os.getpid()

    @property
    def fs(self) -> Any:
        """The fsspec file system, made again in a forked child (a DataLoader worker): the
        parent's (s3fs's event loop and sessions) refuses to work there."""
        if self._pid != os.getpid():
            import fsspec

            self._fs = fsspec.url_to_fs(self.url)[0]
            self._pid = os.getpid()
        return self._fs

    def _p(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def where(self, key: str) -> str:
        return f"{self.url}/{key}" if key else self.url

    def _call(self, what: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one file-system call, turning access failures into one clear StoreError."""
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except PermissionError as e:
            raise StoreReadOnlyError(
                f"cannot {what} {self.where(key)}: access denied ({e}); check the credentials "
                "in the environment (e.g. AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
            ) from e
        except OSError as e:
            raise StoreError(f"cannot {what} {self.where(key)}: {e}") from e
        except Exception as e:
            # Back-ends raise their own types for missing credentials or endpoints
            # (botocore's NoCredentialsError, EndpointConnectionError, …).
            name = type(e).__name__
            if "Credential" in name:
                raise StoreAccessError(
                    f"no credentials to {what} {self.where(key)}: set them in the environment "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, …)"
                ) from e
            raise StoreError(f"cannot {what} {self.where(key)}: {name}: {e}") from e

    def read(self, key: str, limit: int | None = None) -> bytes:
        data: bytes = self._call("read", key, self.fs.cat_file, self._p(key), end=limit)
        return data

    def read_array(self, key: str) -> npt.NDArray[np.uint8]:
        data = self.read(key)
        out = np.empty(len(data), dtype=np.uint8)
        out[:] = np.frombuffer(data, dtype=np.uint8)
        return out

    def write(self, key: str, *parts: bytes | memoryview) -> None:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            self._call("write", key, self.fs.pipe_file, self._p(key), bytes(data))
        except FileNotFoundError as e:
            raise StoreAccessError(
                f"cannot write {self.where(key)}: {e}; create the bucket first, or check "
                "the store URL"
            ) from e

    def write_atomic(self, key: str, data: bytes) -> None:
        # One PUT of the whole object: readers see the old object or the new one, never part.
        self.write(key, data)

    def list(self, key: str) -> list[str]:
        p = self._p(key)
        # Listings are cached by some back-ends (s3fs): a store's commits change under us.
        self.fs.invalidate_cache(p)
        try:
            entries = self._call("list", key, self.fs.ls, p, detail=False)
        except FileNotFoundError:
            return []
        return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != p]

    def exists(self, key: str) -> bool:
        p = self._p(key)
        self.fs.invalidate_cache(p)
        return bool(self._call("look up", key, self.fs.exists, p))

    def is_file(self, key: str) -> bool:
        p = self._p(key)
        self.fs.invalidate_cache(p)
        return bool(self._call("look up", key, self.fs.isfile, p))

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("remove", key, self.fs.rm_file, self._p(key))

    def remove_tree(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("remove", key, self.fs.rm, self._p(key), recursive=True)

    def age(self, key: str, now: float) -> float | None:
        """Seconds since the segment ``key`` was created, read from its id.

        Segment ids begin with their writer's clock in nanoseconds (hex): object stores keep
        no directory times, and the id is there before the first object is. gc compares it
        with this machine's clock, which is one more reason for a generous grace period.
        """
        name = key.rsplit("/", 1)[-1]
        if not self.exists(key):
            return None
        try:
            created = int(name[:_SEGMENT_TIME_DIGITS], 16) / 1e9
        except ValueError:
            return None
        return now - created

    def usage(self, key: str) -> tuple[int, int]:
        p = self._p(key)
        self.fs.invalidate_cache(p)
        try:
            found = self._call("list", key, self.fs.find, p, detail=True)
        except FileNotFoundError:
            return 0, 0
        sizes = [int(info.get("size") or 0) for info in found.values()]
        return sum(sizes), len(sizes)

    def zarr_store(self) -> Any:
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url, read_only=True)

    @contextlib.contextmanager
    def new_segment(self, key: str) -> Iterator[None]:
        # The segment id is unique and invisible until its commit object exists.
        yield

    def is_locked(self, key: str) -> bool:
        return False

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        yield  # object stores have no locks

    def writable(self) -> bool:
        return True

    def mkdir(self, key: str) -> None:
        return

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the URL where it lands (a Dask worker, a DataLoader worker), with that
        # machine's own credentials.
        return (RemoteFiles, (self.url,))
