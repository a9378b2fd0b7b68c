"""The ``replay --state`` file: checksummed, locked, written atomically through symlinks.

A state file is the controller's checkpoint (``format``, ``config``, ``state``) plus the
last decision and a SHA-256 over the canonical JSON of everything else, so that a retry
of the last epoch gets the same decision and a damaged or edited file is refused rather
than silently obeyed. Files written before the checksum existed (exactly the three
checkpoint keys) still load. This module does file handling only: it holds no decision
rule and never prints; every problem is a :class:`StateFileError` with a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from autodrop_core._config import ConfigError, show
from autodrop_core._controller import Controller
from autodrop_core._records import Decision, StateError

try:  # POSIX only; elsewhere the file is still written atomically, without a lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["StateFile", "StateFileError", "checksum", "clip", "short"]

_CHECKPOINT_KEYS = ("format", "config", "state")
_NEW_KEYS = ("last_decision", "sha256")
_DECISION_KEYS = tuple(f.name for f in dataclasses.fields(Decision))
_TMP_PREFIX = ".autodrop-tmp-"


class StateFileError(Exception):
    """A state file cannot be locked, read, trusted or written; the message says why."""


def short(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that a huge record is never echoed."""
    return show(value, limit)


def clip(text: str, limit: int = 200) -> str:
    """A message cut to ``limit`` characters (no quotes added)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def checksum(payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``payload``: sorted keys, no spaces, UTF-8."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class StateFile:
    """One state file, held under an advisory lock from :meth:`open` until :meth:`close`.

    ``path`` is resolved once (a symlink is followed, so the link stays a link and its
    target is what gets replaced). The lock lives in a sidecar ``<target>.lock`` that is
    never deleted (deleting a lock file races with the next writer); ``flock`` releases
    it when the process exits, however it exits.
    """

    def __init__(self, path: str) -> None:
        self.given = path
        self.path = os.path.realpath(path)
        self.directory = os.path.dirname(self.path)
        self._lock_fd: int | None = None

    # -- lock -------------------------------------------------------------------------
    def open(self) -> None:
        """Check the directory is writable, take the lock (waiting for another writer) and sweep temp files."""
        if not os.path.isdir(self.directory):
            raise StateFileError(f"--state {self.given}: directory {self.directory!r} does not exist; create it first")
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StateFileError(
                f"--state {self.given}: cannot write in directory {self.directory!r} ({err.strerror}); "
                "the state file needs a writable directory"
            ) from err
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another replay holds this state file
            except OSError as err:
                os.close(fd)
                raise StateFileError(f"--state {self.given}: cannot lock {self.path}.lock ({err.strerror})") from err
        self._lock_fd = fd
        # Only the lock holder writes temp files, so any left over are from a killed writer.
        for stale in glob.glob(os.path.join(glob.escape(self.directory), self._tmp_prefix() + "*")):
            with contextlib.suppress(OSError):
                os.unlink(stale)

    def close(self) -> None:
        """Release the lock (closing the descriptor releases ``flock``)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> StateFile:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tmp_prefix(self) -> str:
        return f"{_TMP_PREFIX}{os.path.basename(self.path)}-"

    # -- read -------------------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> tuple[Controller, dict[str, Any] | None]:
        """The controller and the last decision (None in a file from before decisions were stored)."""
        where = f"--state {self.given}"
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except OSError as err:
            raise StateFileError(f"{where}: cannot read ({err.strerror})") from err
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise StateFileError(
                f"{where}: not UTF-8 (byte {raw[err.start]:#04x} at offset {err.start}); the file is damaged"
            ) from err
        try:
            data = json.loads(text)
        except RecursionError as err:
            raise StateFileError(f"{where}: JSON nested too deeply; the file is damaged") from err
        except ValueError as err:  # JSONDecodeError, or an integer with too many digits
            raise StateFileError(f"{where}: not a readable JSON state file ({clip(str(err))})") from err
        if not isinstance(data, dict):
            raise StateFileError(f"{where}: expected a JSON object, got {type(data).__name__}")
        keys = set(data)
        old, new = set(_CHECKPOINT_KEYS), set(_CHECKPOINT_KEYS + _NEW_KEYS)
        if keys != old and keys != new:
            raise StateFileError(
                f"{where}: unexpected keys {sorted(keys ^ new)}; expected {sorted(new)} "
                f"(or {sorted(old)} in a file from an older autodrop)"
            )
        last: dict[str, Any] | None = None
        if keys == new:
            stored = data.pop("sha256")
            try:
                computed = checksum(data)
            except (ValueError, TypeError, RecursionError) as err:
                raise StateFileError(f"{where}: cannot checksum the contents ({clip(str(err))})") from err
            if stored != computed:
                raise StateFileError(
                    f"{where}: checksum mismatch (stored sha256 {short(stored, 70)}, computed {computed}): the file "
                    "was changed or damaged after autodrop wrote it; restore a good copy or start a new state file"
                )
            last = data.pop("last_decision")
        try:
            controller = Controller.from_dict(data)
        except (StateError, ConfigError) as err:
            raise StateFileError(f"{where}: cannot load: {clip(str(err), 300)}") from err
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as err:  # backstop: never a traceback
            raise StateFileError(f"{where}: cannot load: {type(err).__name__}: {clip(str(err), 300)}") from err
        if last is not None:
            epoch = controller.state.epoch
            if not isinstance(last, dict) or set(last) != set(_DECISION_KEYS) or last.get("epoch") != epoch:
                raise StateFileError(f"{where}: last_decision {short(last)} is not the decision of epoch {epoch}")
        elif keys == new and controller.state.epoch != 0:
            raise StateFileError(f"{where}: last_decision is null at epoch {controller.state.epoch}")
        return controller, last

    def _mode(self) -> int:
        """Keep the permissions of the file being replaced; a new file gets 0o666 less the umask."""
        try:
            return os.stat(self.path).st_mode & 0o7777
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            return 0o666 & ~umask

    # -- write ------------------------------------------------------------------------
    def save(self, controller: Controller, last: Mapping[str, Any] | None) -> None:
        """Replace the file atomically (temp file, fsync, rename, fsync of the directory)."""
        payload: dict[str, Any] = {**controller.to_dict(), "last_decision": None if last is None else dict(last)}
        payload["sha256"] = checksum(payload)
        text = json.dumps(payload, allow_nan=False)
        fd, tmp = tempfile.mkstemp(prefix=self._tmp_prefix(), suffix=".json", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.chmod(tmp, self._mode())
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
