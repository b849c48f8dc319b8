"""`make deb`: dist/btrsendd_<version>_<arch>.deb, built with dpkg-deb on the Debian release it
is for.

How the Python dependencies ship: in a private virtualenv, /usr/lib/btrsendd, filled by pip at
build time.  Debian 12 has python3-pydantic 1.10 (btrsendd needs pydantic 2), structlog 22
(needs 24) and APScheduler 3.9 (needs 3.10), and no python3-crc32c: its packages cannot run
btrsendd.  The virtualenv gets exactly the versions `make venv` installed for the test suite
(pip freeze of .venv, as constraints): what ships is what was tested.  Its compiled parts
(pydantic-core, crc32c, the btrfsutil binding built against this machine's libbtrfsutil) and
its interpreter link make the package specific to this architecture and Debian release:
Depends names the interpreter (python3.11) and the libbtrfsutil1 it was built against.

Everything else (command, unit, man pages, completions, documents, configuration) is put in
place by the Makefile's install-files target, with DESTDIR pointing at the staging tree: the
same recipe as `make install`, so the two cannot differ.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging" / "deb"
VENV = "/usr/lib/btrsendd"
DOCDIR = "/usr/share/doc/btrsendd"
CONFFILE = "/etc/btrsendd/btrsendd.toml"
#: install-files' destinations in the package (Debian's places, not /usr/local's).
DESTINATIONS = {
    "INSTALL_VENV": VENV,
    "BINDIR": "/usr/bin",
    "UNITDIR": "/lib/systemd/system",
    "CONFDIR": "/etc/btrsendd",
    "DOCDIR": DOCDIR,
    "MANDIR": "/usr/share/man",
    "BASHCOMPDIR": "/usr/share/bash-completion/completions",
    "ZSHCOMPDIR": "/usr/share/zsh/vendor-completions",
}
#: What btrsendd runs, besides its interpreter and libbtrfsutil: btrfs send/receive and
#: mkfs.btrfs (verify --deep), gpg, the compressors, mount (verify --deep's scratch btrfs),
#: and /bin/kill (procps), which the unit's ExecReload runs.
RUNTIME_DEPENDS = ["btrfs-progs", "gnupg", "zstd", "pigz", "gzip", "mount", "procps"]
DESCRIPTION = """\
incremental, encrypted btrfs backups to AWS cold storage
 btrsendd takes read-only snapshots of btrfs subvolumes on its own schedule, uploads full
 and incremental btrfs send streams (compressed, then encrypted with gpg to public keys only)
 to S3 Glacier storage classes, a Glacier vault or a directory, and restores any backed-up day.
 It runs as a systemd service (Type=notify, sandboxed) and keeps a local sqlite catalog and a
 manifest beside every backup, so a new machine can restore from the bucket alone.
 .
 Python dependencies ship in a private virtualenv in /usr/lib/btrsendd."""


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"build_deb: {' '.join(argv)} failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return proc.stdout


def version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    if not found:
        sys.exit("build_deb: no version in pyproject.toml")
    return found.group(1)


def upstream_version(package: str) -> str:
    """The installed version of a Debian package, without epoch and revision (6.2)."""
    full = run("dpkg-query", "-W", "-f=${Version}", package)
    return full.split(":")[-1].split("-")[0].split("+")[0]


def build_venv(stage: Path, python: str, work: Path) -> str:
    """The virtualenv at stage/usr/lib/btrsendd, ready to run from /usr/lib/btrsendd; returns
    the interpreter's package name (python3.11)."""
    interpreter = os.path.realpath(python)
    venv = stage / VENV.lstrip("/")
    run(interpreter, "-m", "venv", "--without-pip", str(venv))
    wheels = work / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT))
    constraints = work / "constraints.txt"
    constraints.write_text(run(sys.executable, "-m", "pip", "freeze", "--exclude-editable"))
    btrfsutil = run(str(ROOT / "scripts" / "btrfsutil-requirement")).strip()
    [wheel] = wheels.glob("btrsendd-*.whl")
    run(
        sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
        "--no-compile", "--no-warn-script-location", "-c", str(constraints), btrfsutil, str(wheel),
    )  # fmt: skip
    # Scripts and pyvenv.cfg name the staging path; the package installs at VENV.
    for name in ("activate", "activate.csh", "activate.fish", "Activate.ps1"):
        (venv / "bin" / name).unlink(missing_ok=True)
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if str(venv).encode() in data:
                path.write_bytes(data.replace(str(venv).encode(), VENV.encode()))
    # Byte code compiled now, naming its installed path, and valid whatever the files' times.
    run(
        interpreter, "-m", "compileall", "-q", "-s", str(venv), "-p", VENV,
        "--invalidation-mode", "unchecked-hash", str(venv / "lib"),
    )  # fmt: skip
    return Path(interpreter).name


def install_files(stage: Path) -> None:
    """The Makefile's install-files into the staging tree."""
    settings = [f"{name}={value}" for name, value in DESTINATIONS.items()]
    run(
        "make",
        "--no-print-directory",
        "-C",
        str(ROOT),
        "install-files",
        f"DESTDIR={stage}",
        *settings,
    )
    # Debian installs man pages and the changelog compressed (gzip -9n: no name, no time).
    for page in (stage / "usr/share/man").rglob("*.[0-9]"):
        with (
            open(page, "rb") as raw,
            gzip.GzipFile(page.name, "wb", 9, open(f"{page}.gz", "wb"), 0) as out,
        ):
            shutil.copyfileobj(raw, out)
        page.unlink()
    changelog = stage / DOCDIR.lstrip("/") / "changelog.gz"
    with gzip.GzipFile("changelog", "wb", 9, open(changelog, "wb"), 0) as out:
        out.write((ROOT / "CHANGELOG.md").read_bytes())


def control(stage: Path, interpreter: str, arch: str) -> None:
    debian = stage / "DEBIAN"
    debian.mkdir(mode=0o755)
    size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file() and not p.is_symlink())
    depends = [
        interpreter,
        f"libbtrfsutil1 (>= {upstream_version('libbtrfsutil1')})",
        *RUNTIME_DEPENDS,
    ]
    fields = {
        "Package": "btrsendd",
        "Version": version(),
        "Architecture": arch,
        "Maintainer": os.environ.get("DEB_MAINTAINER", "btrsendd maintainers <btrsendd@localhost>"),
        "Installed-Size": str((size + 1023) // 1024),
        "Depends": ", ".join(depends),
        "Section": "admin",
        "Priority": "optional",
        "Description": DESCRIPTION,
    }
    (debian / "control").write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
    (debian / "conffiles").write_text(CONFFILE + "\n")
    for script in ("postinst", "prerm", "postrm"):
        shutil.copy(PACKAGING / script, debian / script)
        (debian / script).chmod(0o755)


def check(stage: Path) -> None:
    """Refuse a tree that still names the staging directory or has the wrong modes."""
    needle = str(stage).encode()
    leaks = [
        str(p.relative_to(stage))
        for p in stage.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    ]
    if leaks:
        sys.exit(f"build_deb: these files name the staging directory: {', '.join(leaks[:10])}")
    for path, mode in ((CONFFILE, 0o600), ("/etc/btrsendd", 0o700)):
        actual = (stage / path.lstrip("/")).stat().st_mode & 0o7777
        if actual != mode:
            sys.exit(f"build_deb: {path} has mode {actual:o}, not {mode:o}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="/usr/bin/python3", help="the system interpreter")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "deb", help="emptied first")
    args = parser.parse_args()
    os.umask(0o022)  # the modes in the package do not depend on who builds it
    arch = run("dpkg", "--print-architecture").strip()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    stage = work / "root"
    stage.mkdir(parents=True)
    interpreter = build_venv(stage, args.python, work)
    install_files(stage)
    control(stage, interpreter, arch)
    check(stage)
    args.out.mkdir(exist_ok=True)
    deb = args.out / f"btrsendd_{version()}_{arch}.deb"
    run("dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(deb))
    print(deb.relative_to(ROOT) if deb.is_relative_to(ROOT) else deb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
