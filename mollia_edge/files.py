"""The files a job writes: checked before any work, written privately and atomically, locked.

* :func:`check_job_paths`: the input, every output and the session store are distinct files;
  an output is never the input, a folder, or in a folder that cannot be written. Checked
  before the first model loads, so a refusal costs nothing and leaves nothing behind.
* :func:`atomic_write`: a file appears whole or not at all. Its temporary copy sits beside it
  as ``.NAME.<random>.tmp``, created readable by the user only (mode 0600, or stricter under
  the umask), and is removed on any error; one left by a killed process is removed by
  :func:`remove_stale_temporaries` when the next job on the same output holds the lock.
* :class:`SessionLock`: one job per session at a time; a second one is told which process
  holds it, at once.

Every file that holds or derives from the user's text is created with mode 0600: outputs,
reports, the classifier, the session store and its caches.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO

from .errors import DataError, StoreError

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700
SQLITE_MAGIC = b"SQLite format 3\x00"


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_error(path: Path, exc: OSError) -> DataError:
    """The one line for a write to ``path`` that failed: a full disk, or another reason."""
    if exc.errno in NO_SPACE:
        return DataError(f"no space left on device: {path}; free some space and run the command again "
                         "(nothing was half-written; a job resumes from its session store)")
    return DataError(f"cannot write {path} ({exc.strerror or exc}); check the folder and run the command again")


_staged: ContextVar[list[tuple[str, Path]] | None] = ContextVar("staged_writes", default=None)


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """Inside it, :func:`atomic_write` and :func:`atomic_write_from` write every file to its
    temporary copy and rename them all only when the block ends without an error: a job's outputs
    appear together or not at all (a full disk at the last file leaves the earlier ones unchanged)."""
    staged: list[tuple[str, Path]] = []
    token = _staged.set(staged)
    try:
        yield
        for name, path in staged:  # renames need no space
            os.replace(name, path)
        staged.clear()
    finally:
        _staged.reset(token)
        for name, _ in staged:
            Path(name).unlink(missing_ok=True)


def _finish(name: str, path: Path) -> None:
    staged = _staged.get()
    if staged is None:
        os.replace(name, path)
    else:
        staged.append((name, path))


@contextmanager
def _temporary(path: Path) -> Iterator[tuple[int, str]]:
    """(fd, name) of a new private temporary file beside ``path``, put at ``path`` when the block
    ends (:func:`_finish`); removed on any error, and a failed write (a full disk) a
    :class:`DataError` naming ``path``."""
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield fd, name
        _finish(name, path)
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` with a binary file object, then put what it wrote at ``path`` in one step
    (at the end of an :func:`all_or_nothing` block when inside one).

    The file is flushed to disk before the rename; its mode is 0600 (minus the umask). A full
    disk is a :class:`DataError` naming ``path``, and no temporary file is left.
    """
    path = Path(path)
    with _temporary(path) as (fd, _), os.fdopen(fd, "wb") as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())


def atomic_write_from(path: str | Path, write_path: Callable[[Path], None]) -> None:
    """:func:`atomic_write` for writers that want a file name (``onnx.save``, pyarrow)."""
    path = Path(path)
    with _temporary(path) as (fd, name):
        os.close(fd)
        write_path(Path(name))  # into the file mkstemp made 0600: the writer keeps its mode


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda out: out.write(text.encode("utf-8")))


def remove_stale_temporaries(paths: Iterable[Path]) -> int:
    """Remove the temporary copies that killed writers left beside ``paths``; how many.

    Call it only while holding the lock of the job that writes those paths.
    """
    return sum(remove_matching(path.parent, _temporary_prefix(path) + "*.tmp") for path in paths)


def remove_matching(folder: Path, pattern: str) -> int:
    """Remove the regular files in ``folder`` whose names match the glob ``pattern``; how many."""
    removed = 0
    if folder.is_dir():
        for stale in folder.glob(pattern):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink(missing_ok=True)
                removed += 1
    return removed


# ---------------------------------------------------------------------------- path checks
def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_writable_folder(path: Path, what: str) -> None:
    """``path`` can be created in its folder: the folder exists and takes a new file."""
    folder = path.parent
    if not folder.is_dir():
        raise DataError(f"{path}: folder {folder} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".mollia-edge-probe.", suffix=".tmp")
    except OSError as exc:
        reason = "it is read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else exc.strerror
        raise DataError(f"{path}: cannot write the {what} in {folder} ({reason}); choose another folder") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: Path, what: str) -> None:
    """An output path: not a folder or special file, in a folder that takes new files."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a file name for the {what}")
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: is not a regular file; give another file name for the {what}")
    check_writable_folder(path, what)


SESSION_COMPANIONS = ("-wal", "-shm", "-journal", ".lock", ".embeddings")
"""Files (and the embeddings folder) SQLite and the job keep beside a session store ``S``: ``S-wal``..."""


def refuse_link(path: Path, what: str) -> None:
    """A :class:`DataError` if ``path`` is a symbolic link: a job never writes through one (the
    link's target, perhaps the user's input, would be overwritten)."""
    if path.is_symlink():
        raise DataError(f"{path}: the {what} is a symbolic link; mollia-edge never writes through one "
                        "(it could overwrite the file it points to): remove the link or choose another path")


def check_session_file(path: Path) -> None:
    """A session store path: absent, empty, or an SQLite database (never a table or a folder),
    with no symbolic link at it or at a companion (:data:`SESSION_COMPANIONS`). A missing folder
    is fine: the store's folder is created with it."""
    if not path.parent.exists():
        return
    refuse_link(path, "session store")
    for suffix in SESSION_COMPANIONS:
        refuse_link(path.with_name(path.name + suffix), f"session store's {suffix.lstrip('-.')} file")
    check_output_file(path, "session store")
    if path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        if head != SQLITE_MAGIC:
            raise StoreError(
                f"{path}: exists and is not a mollia-edge session store (not an SQLite file); "
                "choose another --session path"
            )


def check_job_paths(inputs: Mapping[str, Path], outputs: Mapping[str, Path], session: Path | None = None) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other.

    ``inputs`` and ``outputs`` map a role (``"input"``, ``"output"``, ``"report"``...) to a
    path; ``session`` is the session store, also an output but one that may already exist.
    """
    named = list(outputs.items()) + ([("session store", session)] if session is not None else [])
    for role, path in named:
        for source_role, source in inputs.items():
            if _same_file(path, source):
                raise DataError(f"{path}: the {role} would overwrite the {source_role}; choose another file")
    for i, (role, path) in enumerate(named):
        for other_role, other in named[:i]:
            if _same_file(path, other):
                raise DataError(f"{path}: is both the {other_role} and the {role}; choose another file for one")
    for role, path in outputs.items():
        check_output_file(path, role)
    if session is not None:
        check_session_file(session)


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file ("not found", "is a folder"...), or None when it
    can; never opens it (a pipe would block)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a pipe, device or socket)"
    return None


def make_private_folder(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by the user only; keep an existing one."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    if not path.is_dir():
        raise DataError(f"{path}: is not a folder; remove it or choose another path")


# ---------------------------------------------------------------------------- the lock
_held: dict[str, tuple[int, int]] = {}
"""Locks this process holds: lock file path -> (fd, depth); a job inside the TUI re-enters."""


class SessionLock:
    """An exclusive lock on a session store (``SESSION.lock`` beside it), held while a job runs.

    The lock is the kernel's (``flock``): it ends with the process, so a killed job never
    leaves a session locked. Re-entrant within one process.
    """

    def __init__(self, session: Path, output: Path | None = None) -> None:
        """``output``: this lock guards a job's output instead (its default session's lock, so two
        jobs writing one output collide whatever their ``--session``)."""
        self.path = session.with_name(session.name + ".lock")
        self.session = session
        self.output = output

    def __enter__(self) -> SessionLock:
        key = str(self.path.resolve())
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            return self
        if not self.path.parent.is_dir():
            make_private_folder(self.path.parent)  # as for -o: the store's folder is made with it
        try:  # never through a link (its target would be truncated), never a pipe that would block
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, PRIVATE_FILE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                refuse_link(self.path, "session store's lock file")
            raise StoreError(f"cannot lock session store {self.session}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(f"{self.path}: the session store's lock file is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            what = f"output {self.output} is being written" if self.output else f"session store {self.session} is in use"
            raise StoreError(
                f"{what} by process {holder} (another mollia-edge job); "
                "wait for it to finish, or give this job another -o" + ("" if self.output else " or --session")
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = (fd, 1)
        return self

    def __exit__(self, *exc: object) -> None:
        key = str(self.path.resolve())
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
        os.close(fd)  # releases the flock; the file stays (removing it would race a waiting job)
