"""Crash-safe file writes: a half-written file never replaces a good one.

Everything that writes an artefact others rely on (configs, checkpoints, ``episode.json``,
demo summaries) goes through :func:`atomic_open`: the data goes to a temporary file in the same
folder, is flushed and fsynced, then ``os.replace`` swaps it in and the folder entry is fsynced.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_bytes", "fsync_dir", "remove_stale_temporaries",
           "recover_folder_swap"]

# tempfile.mkstemp names: prefix + 8 characters of this alphabet + suffix
_TMP_RANDOM = re.compile(r"[a-z0-9_]{8}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _final_mode(path: Path) -> int:
    """The permissions the file should get: an existing file's own, else what ``open()`` would
    give a new file (0o666 minus the umask); mkstemp's 0o600 would hide outputs from others."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_process_umask()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file that becomes ``path`` only if the ``with`` block succeeds.

    Args:
        path: the final file; its parent folder is created if missing.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), _final_mode(path))
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def remove_stale_temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporaries :func:`atomic_open` left in ``folder`` for the files ``names``.

    A process killed (SIGKILL, power loss) inside :func:`atomic_open` leaves its
    ``.<name>.<8 random characters>.tmp`` behind; only files of exactly that shape, for the given
    names, are removed (nothing else in the folder is touched). Call it only when no other
    process is writing those files.

    Returns:
        The files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for name in names:
        prefix = f".{name}."
        for candidate in folder.glob(f".{glob.escape(name)}.*.tmp"):
            middle = candidate.name[len(prefix):-len(".tmp")]
            if candidate.name.startswith(prefix) and _TMP_RANDOM.fullmatch(middle) and candidate.is_file():
                candidate.unlink(missing_ok=True)
                removed.append(candidate)
    return removed


def _our_temporary_folder(path: Path, prefix: str, allowed: Iterable[str]) -> bool:
    """``path`` is a folder ``tempfile.mkdtemp(prefix=prefix)`` made and holds only ``allowed`` names."""
    middle = path.name[len(prefix):]
    if not (path.name.startswith(prefix) and _TMP_RANDOM.fullmatch(middle) and path.is_dir() and not path.is_symlink()):
        return False
    allowed = set(allowed)
    return all(child.name in allowed for child in path.iterdir())


def recover_folder_swap(out: str | os.PathLike, contents: Iterable[str]) -> list[str]:
    """Undo what a killed folder swap left beside ``out`` (an export written as
    ``.<name>.tmp-XXXXXXXX`` and swapped in by renaming ``out`` to ``.<name>.old-XXXXXXXX/<name>``,
    then the new folder to ``out``, then removing the old one).

    * ``out`` is missing and an ``.old-*`` folder holds the previous ``<name>``: the process died
      between the two renames; the previous folder is put back at ``out``.
    * ``out`` exists: ``.old-*`` folders are leftovers of a swap that completed; removed.
    * ``.tmp-*`` folders: unfinished writes of a killed run; removed.

    Only folders of exactly the ``mkdtemp`` shape whose entries are all in ``contents`` (the names
    the writer creates) are touched; anything else is left alone. Call it only while no other
    process writes ``out``. Returns one line per action taken (for the caller to print).
    """
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return []
    contents = set(contents)
    done: list[str] = []
    old_prefix, tmp_prefix = f".{out.name}.old-", f".{out.name}.tmp-"
    olds = sorted((p for p in parent.glob(f"{glob.escape(old_prefix)}*")
                   if _our_temporary_folder(p, old_prefix, {out.name})
                   and (not (p / out.name).exists()
                        or all(c.name in contents for c in (p / out.name).iterdir()))),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for old in olds:
        inner = old / out.name
        if not out.exists() and inner.is_dir():
            os.rename(inner, out)
            fsync_dir(parent)
            done.append(f"restored {out} from {old.name} (an earlier run was killed while replacing it)")
        shutil.rmtree(old, ignore_errors=True)
        if not any(line.startswith("restored") and old.name in line for line in done):
            done.append(f"removed {old.name} (the replaced folder of an earlier run)")
    for tmp in parent.glob(f"{glob.escape(tmp_prefix)}*"):
        if _our_temporary_folder(tmp, tmp_prefix, contents):
            shutil.rmtree(tmp, ignore_errors=True)
            done.append(f"removed {tmp.name} (the unfinished folder of a killed run)")
    return done
