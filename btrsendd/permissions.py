"""Who may read and change what btrsendd trusts: its directories and its configuration file.

btrsendd runs as root, so whoever else can change what it reads can steer it:

- ``encryption.gnupg_home``: a key or option file there decides whom backups are encrypted to;
- ``state_dir``: the catalog decides what is deleted and what restore trusts, and files there
  are opened as root;
- every ``snapshot_dir``: snapshots keep every file as it was when taken, also files the owner
  has made private since.

Each must therefore belong to the user btrsendd runs as (root) and be closed to everyone else
(0700), and be reached only through directories nobody else can change: whoever can write to a
parent (without the sticky bit) can rename the directory away and put their own in its place,
and whoever owns a symlink on the way can point it elsewhere.

The commands act (``secure``): they create a missing directory 0700, tighten the mode of one
root owns (logged as a warning), and refuse one that someone else owns or could swap, with the
command that fixes it.  ``check-config`` only reports (``inspect``).
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from btrsendd.errors import OperationalError, UsageError

Level = Literal["error", "warning"]

#: Mode bits nobody but the owner may have on a private directory.
_OTHERS = 0o077


@dataclass(frozen=True)
class Role:
    """A directory btrsendd keeps private: the key that configures it, and what others could
    do with it (for messages)."""

    key: str
    #: What whoever else can write to it (or own it) could do.
    write_risk: str
    #: What whoever else can read it could learn.
    read_risk: str
    #: Whether everything in it must belong to btrsendd's user too: a file someone else
    #: owns (left from a time the directory was open) can be changed through a descriptor
    #: they still hold.  Not for snapshots, which keep the owner of their source.
    own_entries: bool = True


STATE_DIR = Role(
    "state_dir",
    "whoever else can change it can rewrite the catalog",
    "others can read the catalog (what is backed up, when, and where to)",
)
GNUPG_HOME = Role(
    "encryption.gnupg_home",
    "whoever else can change it can make gpg encrypt to their own key",
    "others can read the keyring; gpg wants it private",
)
#: The private keyring ``restore`` and ``verify --deep`` decrypt with: read, never changed.
RESTORE_KEYRING = Role(
    "--gnupg-home",
    "whoever else can change it can make root's gpg-agent (which reads gpg-agent.conf there "
    "even under gpg --no-options) run a program of theirs or write its log-file anywhere",
    "others can read the private key",
)
DEFAULT_KEYRING = Role(
    "gpg's default keyring ($GNUPGHOME or ~/.gnupg)",
    RESTORE_KEYRING.write_risk,
    RESTORE_KEYRING.read_risk,
)
SNAPSHOT_DIR = Role(
    "snapshot_dir",
    "whoever else can change it can plant a snapshot of their own, which btrsendd would back up",
    "others can read every file of every snapshot, also files made private since",
    own_entries=False,
)


@dataclass(frozen=True)
class Problem:
    """One reason a directory is not private; ``new_mode`` is set when chmod alone fixes it."""

    message: str
    new_mode: int | None = None


def _trusted(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _owner() -> str:
    return "root" if os.geteuid() == 0 else _user(os.geteuid()).removeprefix("user ")


def _swappable(directory: Path, st: os.stat_result) -> str | None:
    """Who besides btrsendd's user can replace entries of ``directory``, in words, or None."""
    if not _trusted(st.st_uid):
        return f"belongs to {_user(st.st_uid)}, who"
    sticky = bool(st.st_mode & stat.S_ISVTX)
    mode = stat.S_IMODE(st.st_mode)
    if not sticky and (mode & 0o002 or (mode & 0o020 and st.st_gid != 0)):
        return f"others can write to (mode {mode:04o}), so they"
    return None


def _ancestors(path: Path) -> list[Path]:
    """The existing directories the kernel walks through to reach ``path``, outermost first.

    Those of the resolved path, and for each symlink on the literal path the directory it
    sits in (whoever can replace the link can redirect the walk).
    """
    seen: dict[Path, None] = {}
    literal = Path(os.path.abspath(path))
    for prefix in [*reversed(literal.parents), literal]:
        if prefix.is_symlink():
            holder = Path(os.path.realpath(prefix.parent))
            seen.update(dict.fromkeys([*reversed(holder.parents), holder]))
    real = Path(os.path.realpath(literal))
    seen.update(dict.fromkeys(reversed(real.parents)))
    return [d for d in seen if d.is_dir()]


def _links(path: Path) -> list[Path]:
    literal = Path(os.path.abspath(path))
    return [p for p in [*reversed(literal.parents), literal] if p.is_symlink()]


def inspect(path: Path, role: Role) -> list[Problem]:
    """Every reason ``path`` is not a private directory; [] also when it does not exist yet
    (it is then created 0700) and its parents are sound."""
    problems = []
    for link in _links(path):
        owner = link.lstat().st_uid
        if not _trusted(owner):
            problems.append(
                Problem(
                    f"{path} is reached through the symlink {link}, which belongs to "
                    f"{_user(owner)}, who can point it elsewhere; replace the link with one "
                    f"root owns, or set {role.key} to the real path"
                )
            )
    for directory in _ancestors(path):
        who = _swappable(directory, directory.stat())
        if who is not None:
            problems.append(
                Problem(
                    f"{path} lies inside {directory}, which {who} can put a directory of "
                    f"their own in its place: {role.write_risk}; move {role.key} to a directory "
                    f"only root can change (or chown root:root {directory} && chmod go-w "
                    f"{directory})"
                )
            )
    try:
        st = path.stat()
    except FileNotFoundError:
        return problems
    if not stat.S_ISDIR(st.st_mode):
        return [*problems, Problem(f"{path} is not a directory; move it away or fix {role.key}")]
    mode = stat.S_IMODE(st.st_mode)
    if not _trusted(st.st_uid):
        problems.append(
            Problem(
                f"{path} belongs to {_user(st.st_uid)}, not {_owner()}: {role.write_risk}; "
                f"chown root:root {path} && chmod 700 {path}"
            )
        )
        return problems
    if role.own_entries:
        problems += _foreign_entries(path, role)
    if mode & _OTHERS:
        risk = role.write_risk if mode & 0o022 else role.read_risk
        problems.append(
            Problem(
                f"{path} has mode {mode:04o}: {risk}; chmod 700 {path} (btrsendd "
                "does so itself when it next uses it)",
                new_mode=mode & ~_OTHERS,
            )
        )
    return problems


def _foreign_entries(path: Path, role: Role) -> list[Problem]:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []  # whoever uses the directory reports what is wrong with reading it
    for entry in entries:
        try:
            owner = entry.stat(follow_symlinks=False).st_uid
        except FileNotFoundError:
            continue  # gone meanwhile (a lock file, a socket)
        if not _trusted(owner):
            return [
                Problem(
                    f"{path} holds {entry.name}, which belongs to {_user(owner)}: "
                    f"{role.write_risk}; remove what you did not put there, then "
                    f"chown -R root:root {path} && chmod 700 {path}"
                )
            ]
    return []


def secure(path: Path, role: Role, create: Callable[[Path], None] | None = None) -> None:
    """Make ``path`` a private directory or refuse it (``UsageError`` with the fix).

    A missing directory is made by ``create`` (which must make it 0700), or left to whoever
    needs it when ``create`` is None.  A mode that lets others in is tightened when the owner
    is right, logged as ``permissions.tightened``.
    """
    if create is not None and not path.exists():
        create(path)
    problems = inspect(path, role)
    refused = [p for p in problems if p.new_mode is None]
    if refused:
        raise UsageError(refused[0].message)
    for problem in problems:
        assert problem.new_mode is not None
        old_mode = stat.S_IMODE(path.stat().st_mode)
        try:
            path.chmod(problem.new_mode)
        except OSError as exc:
            why = str(exc.strerror)
            if exc.errno == errno.EROFS:
                why = (
                    "its filesystem is mounted read-only here (or a service's sandbox makes it so)"
                )
            raise OperationalError(
                f"cannot tighten {path} (mode {old_mode:04o}) to {problem.new_mode:04o}: "
                f"{why}; chmod 700 {path} where it is writable"
            ) from None
        from btrsendd.log import get_logger

        detail = role.read_risk
        if old_mode & 0o022:
            detail = f"{role.write_risk}: check that what it holds is yours"
        get_logger().warning(
            "permissions.tightened",
            directory=str(path),
            key=role.key,
            old_mode=f"{old_mode:04o}",
            new_mode=f"{problem.new_mode:04o}",
            detail=detail,
        )


def refuse_changeable(path: Path, role: Role) -> None:
    """Refuse (``UsageError`` with the fix) an existing directory someone else can change.

    For directories btrsendd only reads and never tightens (a restore's keyring, which may
    be on a stick): one others can merely read is accepted.
    """
    other_fix = " (or use a copy of it that only root can change)"
    for problem in inspect(path, role):
        if problem.new_mode is None:
            raise UsageError(problem.message + other_fix)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        raise UsageError(f"{path} has mode {mode:04o}: {role.write_risk}; chmod go-w {path}")


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with mode 0700, or fail with what to do."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationalError(
            f"cannot create {path}: {exc.strerror}; create it (mode 0700) or point the "
            "configuration at a writable directory"
        ) from None


def unwritable(path: Path) -> str | None:
    """Why btrsendd cannot write to the directory ``path`` and what to do, or None if it can:
    e.g. ``is read-only (its filesystem is mounted read-only); remount it read-write``."""
    if os.access(path, os.W_OK):
        return None
    try:
        mounted_read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        mounted_read_only = False
    if mounted_read_only:
        return "is read-only (its filesystem is mounted read-only); remount it read-write"
    if os.geteuid() != 0:
        return f"is not writable by {_user(os.geteuid())}; run btrsendd as root"
    return f"is not writable (immutable? lsattr -d {path}); make it writable"


def open_state_dir(state_dir: Path) -> None:
    """Everything that opens ``state_dir`` calls this first: private, and writable.

    A read-only state directory is reported as what it is (exit 1), before sqlite gets to
    call it a damaged catalog and advise a rebuild that would not help.
    """
    # Checked first: tightening the mode of a read-only directory would fail less clearly.
    if state_dir.is_dir():
        require_writable(state_dir)
    secure(state_dir, STATE_DIR, make_private_dir)


def require_writable(state_dir: Path) -> None:
    """``OperationalError`` saying what to do if btrsendd cannot write to ``state_dir``."""
    problem = unwritable(state_dir)
    if problem is not None:
        raise OperationalError(
            f"state_dir {state_dir} {problem}, or set state_dir to a writable directory "
            "(btrsendd records every backup there)"
        )


@dataclass(frozen=True)
class FileProblem:
    """What is wrong with the configuration file: ``refuse`` when others could change it
    (every command refuses to run), otherwise others can read it (a warning)."""

    level: Level
    message: str
    refuse: bool


def config_file_problem(path: Path) -> FileProblem | None:
    """What is wrong with who may read or change the configuration file, or None.

    It names the bucket and keys and steers what runs as root: owner-only (0600), reached
    only through directories nobody else can change.  Whoever can change it can make root
    back up any subvolume, unencrypted, to where they can read it.
    """
    try:
        st = path.stat()
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    fix = f"chmod 600 {path}"
    changeable = _changeable(path, st, "can change what btrsendd does as root", fix)
    if changeable is not None:
        return FileProblem("error", changeable, refuse=True)
    if mode & 0o004:
        return FileProblem("error", f"readable by every user (mode {mode:04o}); {fix}", False)
    if mode & 0o040:
        return FileProblem("warning", f"readable by its group (mode {mode:04o}); {fix}", False)
    return None


def program_problem(path: Path) -> str | None:
    """Why a program btrsendd runs as root (a hook) must not be run, or None: whoever
    else can change it, or swap it through a directory on its way, runs anything as root."""
    try:
        st = path.stat()
    except OSError as exc:  # gone (or unreachable) since it was looked up: not run either
        return f"cannot be checked: {exc.strerror or exc}"
    return _changeable(path, st, "can change what btrsendd runs as root", f"chmod go-w {path}")


def _changeable(path: Path, st: os.stat_result, risk: str, fix: str) -> str | None:
    """Who besides btrsendd's user can change the file ``path`` (``st``), and how to stop
    them, or None: its owner, whoever can replace it in a directory on its way, or whoever
    its mode lets write to it."""
    if not _trusted(st.st_uid):
        return f"belongs to {_user(st.st_uid)}, who {risk}; chown root:root {path} && {fix}"
    for directory in _ancestors(path):
        who = _swappable(directory, directory.stat())
        if who is not None:
            return (
                f"lies inside {directory}, which {who} can replace it and so {risk}; move it "
                f"to a directory only root can change (or chmod go-w {directory})"
            )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        whom = "every user" if mode & 0o002 else "its group"
        return f"writable by {whom} (mode {mode:04o}), who {risk}; {fix}"
    return None
