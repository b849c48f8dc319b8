"""`make demo`: btrsendd end to end on an embedded default, in about a minute.

Builds a throwaway world (a loop-mounted btrfs image, a local archive directory, a fresh gpg
key pair), then runs the real `btrsendd` command as a user would: backups over several
simulated days (full, incrementals, a chain that expires), `list`, a restore of the newest
day into a second btrfs, and a file-by-file comparison with the original snapshot; then
`find` and `diff` from the file indexes, and one file of an older day restored into a plain
directory.
Everything is torn down at the end, also when a step fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import textwrap
from datetime import date
from pathlib import Path

# The demo builds its world with the same helpers the tests use: one way to make a loop-mounted
# btrfs and a throwaway key pair, with the same clean-up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fixtures.btrfs import loop_btrfs
from tests.fixtures.gpg import generated_key
from tests.support.trees import snapshot_of

BIN = Path(sys.executable).with_name("btrsendd")
DAYS = [date(2000, m, d) for m in (1, 2, 3, 4, 5) for d in (1, 7, 14, 21)]


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def run(*args: str, show: bool = True, logs: bool = False) -> None:
    """Run a command; its log lines (stderr) are shown only if asked or if it fails."""
    if show:
        print("$ " + " ".join(args), flush=True)
    proc = subprocess.run(list(args), text=True, stderr=None if logs else subprocess.PIPE)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr or "")
        raise SystemExit(f"demo step failed: {' '.join(args)} (exit {proc.returncode})")


def write_config(work: Path, mnt: Path, public: Path, fpr: str) -> Path:
    cfg = work / "btrsendd.toml"
    cfg.write_text(
        textwrap.dedent(f"""\
        # The demo's configuration: short chains and lifetimes so a chain expires in the demo.
        state_dir = "{work / "state"}"

        [schedule]
        backup_days = [1, 7, 14, 21]
        max_incrementals = 3
        chain_lifetime_days = 30

        [snapshots]
        keep_days = 30

        [pipeline]
        compression = "zstd"
        volume_size = "1MiB"

        [encryption]
        mode = "gpg"
        recipients = ["{fpr}"]
        gnupg_home = "{public}"

        [storage]
        backend = "local"
        path = "{work / "archive"}"

        [[sources]]
        name = "data"
        path = "{mnt / "data"}"
        snapshot_dir = "{mnt / "snapshots"}"
        """)
    )
    cfg.chmod(0o600)
    return cfg


def change_data(root: Path, n: int) -> None:
    """A day's worth of changes: new files, an edit, a rename, a deletion."""
    (root / f"report-{n:02d}.txt").write_text(f"report {n}\n" * (100 * (n + 1)))
    with open(root / "journal.log", "a") as f:
        f.write(f"entry {n}\n" * 1000)
    with open(root / "photo.bin", "r+b") as f:
        f.seek(n * 65536)
        f.write(os.urandom(65536))
    if (root / f"report-{n - 1:02d}.txt").exists() and n % 3 == 0:
        os.rename(root / f"report-{n - 1:02d}.txt", root / f"archived-{n - 1:02d}.txt")
    if (root / f"report-{n - 2:02d}.txt").exists() and n % 4 == 0:
        (root / f"report-{n - 2:02d}.txt").unlink()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="btrsendd-demo-") as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as stack:
            step("A btrfs filesystem on a loop device, a subvolume with data, a gpg key")
            mnt = stack.enter_context(loop_btrfs(work, "source"))
            run("btrfs", "subvolume", "create", str(mnt / "data"))
            (mnt / "data" / "photo.bin").write_bytes(os.urandom(2 * 1024 * 1024))
            key = stack.enter_context(generated_key(work / "gnupg", "demo <demo@example.invalid>"))
            cfg = write_config(work, mnt, key.public_home, key.fingerprint)
            btrsendd = [str(BIN), "--config", str(cfg), "--log-format", "console"]

            step("check-config")
            run(str(BIN), "--config", str(cfg), "check-config")

            step(f"Backups over {len(DAYS)} simulated backup days (1 MiB volumes, zstd, gpg)")
            for n, day in enumerate(DAYS):
                change_data(mnt / "data", n)
                run(*btrsendd, "backup", "--date", day.isoformat(), show=False)
            step("list")
            run(*btrsendd, "list")

            step("Local snapshots kept (keep_days = 30, plus the next parent)")
            print("  " + "  ".join(sorted(p.name for p in (mnt / "snapshots").iterdir())))

            step("The archive: one directory per backup, volumes + manifest.json")
            backups = sorted((work / "archive" / "data").iterdir())
            for b in backups[-2:]:
                print(
                    f"  {b.relative_to(work)}/: " + ", ".join(sorted(p.name for p in b.iterdir()))
                )

            newest = DAYS[-1].isoformat()
            step(f"Restore {newest} into a second btrfs and compare with the snapshot")
            target = stack.enter_context(loop_btrfs(work, "target"))
            run(
                *btrsendd,
                "restore",
                "--source",
                "data",
                "--date",
                newest,
                "--target",
                str(target),
                "--yes",
                "--gnupg-home",
                str(key.secret_home),
                logs=True,
            )
            restored = target / newest
            original = mnt / "snapshots" / newest
            if snapshot_of(original) != snapshot_of(restored):
                print("MISMATCH: the restored tree differs from the snapshot", file=sys.stderr)
                return 1
            print(f"  {restored} equals {original}: contents, modes, owners, xattrs, links")

            secret = ("--gnupg-home", str(key.secret_home))
            step("find: every backed-up day a file existed, under either name (file indexes only)")
            run(*btrsendd, "find", "--source", "data", "*-17.txt", *secret)
            step(f"diff: what changed from {DAYS[-2]} to {newest}")
            run(*btrsendd, "diff", "--source", "data", "--from", DAYS[-2].isoformat(),
                "--to", newest, *secret)  # fmt: skip
            old_day = DAYS[-3].isoformat()  # report-17.txt is renamed the day after
            step(f"Restore one file of {old_day} into a plain directory (no btrfs needed)")
            plain = work / "plain"
            plain.mkdir(mode=0o700)
            run(*btrsendd, "restore", "--source", "data", "--date", old_day, "--target",
                str(plain), "--path", "report-17.txt", "--yes", *secret)  # fmt: skip
            one = plain / old_day / "report-17.txt"
            if one.read_bytes() != (mnt / "snapshots" / old_day / "report-17.txt").read_bytes():
                print("MISMATCH: the restored file differs from the snapshot's", file=sys.stderr)
                return 1
            print(f"  {one} equals the snapshot's, read from the volumes the plan lists only")
            step("Done: everything above ran on real btrfs, gpg and the local backend")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
