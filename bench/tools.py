"""The programs the bench needs besides the project's own: installed on first use when missing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

SMTP_SINK = "/usr/sbin/smtp-sink"
VENV_BIN = Path(sys.executable).parent


def _run(command: list[str], **kwargs) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def smtp_sink() -> str:
    """Path to postfix's smtp-sink, installing the Debian package when it is missing.

    Only the test program is wanted: the package is preseeded with "No configuration", so the
    postfix mail system itself has no main.cf and does not start.
    """
    found = shutil.which("smtp-sink") or (SMTP_SINK if os.access(SMTP_SINK, os.X_OK) else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("smtp-sink is missing: install the Debian package 'postfix' "
                         "(debconf 'postfix/main_mailer_type' = 'No configuration').")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n",
                   check=True)
    _run(["apt-get", "update", "-q"], env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postfix"], env=env)
    return SMTP_SINK


def executable(name: str) -> str:
    """A console script of this virtualenv (gunicorn, huey_consumer), else the one on PATH."""
    local = VENV_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is missing: install the project's requirements.txt")
    return found
