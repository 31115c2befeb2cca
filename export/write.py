"""Build the model folder in a temporary sibling and move it into place only when complete.

Beside the target folder ``NAME``, one export owns (``T`` is a random token):

* ``.NAME.tmp-T.lock``: a file the export holds an exclusive ``flock`` on for its whole life. The kernel drops the
  lock when the process ends, however it ends (SIGKILL, OOM, power loss), so "the lock can be taken" means "the
  owner is dead", with no PID-reuse guess. The file also records the PID, host and start time, for people.
* ``.NAME.tmp-T``: the staging folder the export writes into.
* ``.NAME.old-T``: only while replacing an existing ``NAME`` where the OS has no atomic exchange.

Every use of :func:`staging_folder` first settles what dead exports left in the same parent folder: a ``NAME``
that a kill left only in ``.NAME.old-T`` is put back, and their staging folders are removed. A live export's files
are never touched, because its lock cannot be taken.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnx

from albert_onnx.arguments import NAME_MAX
from albert_onnx.model_folder import FORMAT, MANIFEST, MAX_MANIFEST_BYTES, STAMP_KEY, TOKENIZER_FILE, U8S8_FILE, VARIANT_FILES, Manifest

from .errors import ExportError

try:
    import fcntl
except ImportError:  # Windows has no flock: there, leftovers of killed exports are left in place
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_LOCK = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<token>[0-9a-f]{16})\.lock$")
# Staging and retired folders of albert-onnx versions before the lock files (``tempfile.mkdtemp`` names).
_UNLOCKED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<suffix>[^/]+)$")
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def check_external_data(path: Path) -> None:
    """Refuse a graph whose external-data locations would point outside its folder.

    Raises:
        ExportError: A tensor's location is absolute or climbs out with "..".
    """
    model = onnx.load(str(path), load_external_data=False)
    folder = path.parent.resolve()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key != "location":
                continue
            target = (folder / entry.value).resolve()
            if Path(entry.value).is_absolute() or folder not in target.parents:
                raise ExportError(f"{path.name}: initializer {tensor.name!r} points to {entry.value!r}, outside the model folder")


def stamp_graph(path: Path, facts: dict) -> None:
    """Write ``facts`` into the graph's ONNX metadata (``STAMP_KEY``), which the runtime checks against manifest.json."""
    model = onnx.load(str(path), load_external_data=False)
    kept = [entry for entry in model.metadata_props if entry.key != STAMP_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=STAMP_KEY, value=json.dumps(facts, sort_keys=True))
    onnx.save(model, str(path))


@dataclass(frozen=True)
class _Claim:
    """The files one export owns beside its target."""

    parent: Path
    name: str
    token: str

    @property
    def target(self) -> Path:
        return self.parent / self.name

    @property
    def staging(self) -> Path:
        return self.parent / f".{self.name}.tmp-{self.token}"

    @property
    def retired(self) -> Path:
        return self.parent / f".{self.name}.old-{self.token}"

    @property
    def lock(self) -> Path:
        return self.parent / f".{self.name}.tmp-{self.token}.lock"

    @property
    def settled(self) -> bool:
        """Neither its staging nor its retired folder is left: the lock has nothing more to guard."""
        return not self.staging.exists() and not self.retired.exists()


def _lock(fd: int, wait: bool) -> bool | None:
    """Take the exclusive flock on ``fd``.

    Returns:
        True when taken; False when ``wait`` is off and another process holds it; None where the filesystem has no
        flock (some network filesystems): then nobody can tell a live owner from a dead one.
    """
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        return None
    return True


def _claim(target: Path) -> tuple[_Claim, int]:
    """Create and lock this export's lock file; returns the claim and the descriptor that holds the lock."""
    while True:
        claim = _Claim(target.parent, target.name, secrets.token_hex(8))
        fd = os.open(claim.lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        if _lock(fd, wait=True) is None:
            log.debug(f"no flock on {claim.parent}: if this export is killed, its leftovers stay until removed by hand")
        # Between open and flock a settling process may have found the file unlocked and unlinked it as an orphan;
        # a lock on a nameless file protects nothing, so take another token.
        if os.fstat(fd).st_nlink:
            break
        os.close(fd)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.write(fd, f"albert-onnx export pid={os.getpid()} host={socket.gethostname()} started={started}\n".encode())
    return claim, fd


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False where the OS, C library or filesystem has no atomic exchange; then nothing was changed.

    Raises:
        OSError: The exchange was possible but failed (permissions, a path vanished).
    """
    if sys.platform != "linux":
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc before 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or filesystem without RENAME_EXCHANGE
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _size_mb(path: Path) -> float:
    """Megabytes of the regular files under ``path``; files that vanish meanwhile (another export cleaning) count 0."""
    total = 0
    for item in path.rglob("*"):
        try:
            info = item.lstat()
        except FileNotFoundError:
            continue
        total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total / 1e6


def _remove(path: Path, why: str) -> None:
    """Delete a folder this module owns or settled; a failure is logged, so it never hides the export's own outcome."""
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
    except OSError as error:
        log.warning(f"could not remove {path} ({why}): {error}; delete it by hand")


def _settle(claim: _Claim) -> None:
    """Resolve the folders of an export that has ended: put back a target left only in its retired folder, then
    delete what remains. The caller holds the claim's lock, or is the (failing) owner."""
    if claim.retired.exists():
        if not os.path.lexists(claim.target):
            os.rename(claim.retired, claim.target)
            log.warning(f"restored {claim.target} from {claim.retired.name}, where an export killed while replacing it had left it")
        else:
            _remove(claim.retired, "the folder a finished export replaced")
    _remove(claim.staging, "the staging folder of an export that did not finish")


def _settle_if_dead(claim: _Claim) -> None:
    """Settle ``claim`` when its owner is dead (its lock can be taken); leave a live export alone."""
    try:
        fd = os.open(claim.lock, os.O_RDWR)
    except FileNotFoundError:
        return  # finished, or settled by another process, since the folder was listed
    try:
        if not _lock(fd, wait=False) or not os.fstat(fd).st_nlink:
            return  # alive, no flock here to tell, or settled by another process after the open
        owner = os.read(fd, 300).decode("utf-8", "replace").strip() or "an export that died while starting"
        if claim.staging.exists():
            log.info(f"removing {claim.staging.name} ({_size_mb(claim.staging):.1f} MB), left by a dead export ({owner})")
        _settle(claim)
        if claim.settled:  # else keep the lock: the next export retries
            os.unlink(claim.lock)
    finally:
        os.close(fd)


def settle_dead_exports(parent: Path) -> None:
    """Settle the leftovers of dead exports in ``parent``; report the unlocked ones an older albert-onnx left.

    An older albert-onnx kept a replaced folder in ``.NAME.old-*/folder``; where ``NAME`` is missing it is put back.
    Its staging folders carry no lock, so nothing can tell a dead one from a live one: they are named in a warning.
    """
    if fcntl is None or not parent.is_dir():
        return
    names = sorted(os.listdir(parent))
    for entry in names:
        match = _LOCK.match(entry)
        if match:
            _settle_if_dead(_Claim(parent, match["name"], match["token"]))
    unlocked = []
    for entry in sorted(os.listdir(parent)):
        match = _UNLOCKED.match(entry)
        path = parent / entry
        if not match or not path.is_dir() or (parent / f".{match['name']}.tmp-{match['suffix']}.lock").exists():
            continue
        kept, target = path / "folder", parent / match["name"]
        if match["kind"] == "old" and _is_model_folder(kept) and not os.path.lexists(target):
            os.rename(kept, target)
            log.warning(f"restored {target} from {entry}/folder, where an older albert-onnx killed while replacing it had left it")
            if not any(path.iterdir()):
                path.rmdir()
                continue
        unlocked.append(f"{entry} ({_size_mb(path):.1f} MB)")
    if unlocked:
        log.warning(f"left alone in {parent}: {', '.join(unlocked)}: export folders without an owner lock, from an albert-onnx "
                    "before lock files or still in use by one; delete them by hand if no such export is running")


def _is_model_folder(path: Path) -> bool:
    """A real folder whose manifest.json says it is an albert-onnx model folder: only such a folder is ever put back
    (a user's ``.photos.old-2024/folder`` beside the output is not ours to move)."""
    manifest = path / MANIFEST
    if path.is_symlink() or not path.is_dir() or manifest.is_symlink() or not manifest.is_file():
        return False
    try:
        with manifest.open("rb") as handle:
            data = json.loads(handle.read(MAX_MANIFEST_BYTES))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def _install(claim: _Claim, overwrite: bool) -> None:
    """Move the finished staging folder to the target: one rename, or one atomic exchange with the old target."""
    target = claim.target
    if not os.path.lexists(target):
        try:
            os.rename(claim.staging, target)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise ExportError(f"output={str(target)!r} appeared while this export ran (another export?); "
                              "pass --overwrite to replace it, or choose another folder") from None
        return
    if not overwrite:
        raise ExportError(f"output={str(target)!r} appeared while this export ran (another export?); "
                          "pass --overwrite to replace it, or choose another folder")
    if target.is_symlink() or not target.is_dir():
        raise ExportError(f"output={str(target)!r} became a file or a link while this export ran; nothing was replaced. "
                          "Move it away or choose another folder")
    _check_replaceable(target)  # again: it may have appeared, or gained files, while this export ran
    if _exchange(claim.staging, target):
        # Readers see the old folder or the new one, never none; the staging name now holds the old folder.
        _remove(claim.staging, "the folder this export replaced")
        return
    os.rename(target, claim.retired)
    # Killed here, there is no target: the next staging_folder use (ours on an error) puts claim.retired back.
    try:
        os.rename(claim.staging, target)
    except OSError:
        if not os.path.lexists(target):
            os.rename(claim.retired, target)
        raise
    # From here the old folder is this export's garbage, named as a staging folder so it is never put back.
    os.rename(claim.retired, claim.staging)
    _remove(claim.staging, "the folder this export replaced")


def _regular_or_gone(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:  # removed since it was listed: nothing of it to lose
        return True


def _check_replaceable(target: Path) -> None:
    """``--overwrite`` replaces a model folder an export wrote (or an empty folder), never a folder with other files.

    Raises:
        ExportError: ``target`` holds files other than a model folder's, or has no albert-onnx manifest.json.
    """
    own = {MANIFEST, TOKENIZER_FILE, U8S8_FILE, *VARIANT_FILES.values()}
    names = sorted(os.listdir(target))
    if not names:
        return
    others = [name for name in names if name not in own]
    fix = "choose another folder, or move those files out first"
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ExportError(f"output={str(target)!r} holds {shown}, which no export wrote; --overwrite replaces only a model folder: {fix}")
    # a name is not enough: a folder (or a link, a FIFO) named model_fp16.onnx is not a file an export wrote, and what it
    # holds would go with the old folder (an attack lost a user's notes that way)
    not_files = [name for name in names if not _regular_or_gone(target / name)]
    if not_files:
        raise ExportError(f"output={str(target)!r} holds {', '.join(not_files)}, which is not a file an export wrote (a folder, a link "
                          f"or a special file); --overwrite replaces only a model folder: {fix}")
    try:
        with open(target / MANIFEST, "rb") as handle:
            format_name = json.loads(handle.read(MAX_MANIFEST_BYTES)).get("format")
    except (OSError, ValueError, AttributeError):
        format_name = None
    if format_name != FORMAT:
        raise ExportError(f"output={str(target)!r} has no albert-onnx {MANIFEST}, so it is not a model folder an export wrote; "
                          f"--overwrite replaces only a model folder: {fix}")


def _in_a_loop(path: Path) -> bool:
    """Whether ``path`` runs into a loop of symbolic links (which exists() reports as a path that is not there)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def _check_target(target: Path, overwrite: bool) -> Path:
    """The resolved ``target``, if it can be a new model folder (or, with ``overwrite``, replace the one there)."""
    if str(target) == "":
        raise ExportError("output='' names no folder (it would mean the current directory); pass the model folder to create")
    try:
        resolved = Path(target).resolve()
    except RuntimeError:  # Python 3.11 and 3.12: "Symlink loop from ...", for links that lead to each other
        resolved = None
    if resolved is None or _in_a_loop(resolved):  # Python 3.13 leaves a loop unresolved
        raise ExportError(f"output={str(target)!r}: its path runs into a loop of symbolic links; remove or fix the links, or choose "
                          "another folder")
    target = resolved
    spare = NAME_MAX - len(".NAME.tmp-0123456789abcdef.lock") + len("NAME")  # the staging lock: the longest name made beside it
    if len(os.fsencode(target.name)) > spare:
        raise ExportError(f"output={str(target)!r}: the folder name is {len(os.fsencode(target.name))} bytes; the export stages "
                          f"beside it under that name plus {NAME_MAX - spare} bytes, so at most {spare}: pass a shorter name")
    if target.exists() and not target.is_dir():
        raise ExportError(f"output={str(target)!r} is a file; pass a folder path")
    above = next((parent for parent in target.parents if parent.exists()), None)
    if above is not None and not above.is_dir():  # exists() is False under a file (ENOTDIR), so the target passed above
        raise ExportError(f"output={str(target)!r}: {above} is a file, not a folder; choose a path inside a folder")
    if overwrite and target.is_dir():
        _check_replaceable(target)
    return target


def _exists(target: Path) -> ExportError:
    return ExportError(f"output={str(target)!r} already exists; pass --overwrite to replace it, or choose another folder")


def check_output(target: Path, overwrite: bool) -> None:
    """Refuse an output the export could not install, before its minutes of work; :func:`staging_folder` checks again.

    Raises:
        ExportError: ``target`` is a file, exists and ``overwrite`` is False, or is not a model folder to overwrite.
    """
    target = _check_target(target, overwrite)
    if target.exists() and not overwrite:
        raise _exists(target)


def _cannot_write(target: Path, error: OSError) -> ExportError:
    return ExportError(f"output={str(target)!r}: cannot write in {target.parent} ({error.strerror or error}); choose a folder "
                       "you can write to")


@contextlib.contextmanager
def staging_folder(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty folder beside ``target``; on success it replaces ``target`` in one rename or atomic exchange.

    A crash or kill leaves at most this export's ``.<name>.tmp-*`` files, removed by the next use of this function
    in the same parent folder, and never a half-written or missing ``target`` after that next use.

    Raises:
        ExportError: ``target`` exists and ``overwrite`` is False (or appeared meanwhile), it is a file, or its parent
            folder cannot be written.
    """
    target = _check_target(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _cannot_write(target, error) from error
    settle_dead_exports(target.parent)
    if target.exists() and not overwrite:
        raise _exists(target)
    try:
        claim, fd = _claim(target)
    except OSError as error:
        # permissions, a read-only or full disk, a folder such as /proc that takes no new file; anything else (a lock
        # that fails) keeps its traceback
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.ENOENT):
            raise
        raise _cannot_write(target, error) from error
    try:
        os.mkdir(claim.staging)
        yield claim.staging
        _install(claim, overwrite)
    except BaseException:
        _settle(claim)
        raise
    finally:
        if claim.settled:  # else a later export settles what is left
            claim.lock.unlink(missing_ok=True)  # before close: once closed, the file could be taken for a dead export's
        os.close(fd)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write manifest.json (last, so its presence means the folder is complete), checked by the runtime's own reader."""
    text = manifest.to_json()
    Manifest.from_json(text, f"{folder / MANIFEST} (as written)")  # the writer never emits what the reader refuses
    (folder / MANIFEST).write_text(text, encoding="utf-8")
