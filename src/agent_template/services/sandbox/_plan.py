"""How a command is confined: the launcher's plan, the Landlock rules, the environment."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agent_template.services.sandbox import _landlock as ll
from agent_template.services.sandbox.limits import SandboxLimits
from agent_template.services.sandbox.report import SandboxReport
from agent_template.services.sandbox.workspace import SandboxError, Workspace

__all__ = [
    "DEFAULT_PATH",
    "Plan",
    "environment",
    "make_plan",
    "private_temp",
    "rules",
    "workspace_status",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
_DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full")
_DEVICES_RO = ("/dev/random", "/dev/urandom")


@dataclass(slots=True)
class Plan:
    spec: dict[str, Any]
    owner: tuple[int, int] | None  # who the private temporary folder must belong to
    notes: tuple[str, ...]


def make_plan(
    report: SandboxReport, st: os.stat_result, network: bool, limits: SandboxLimits
) -> Plan:
    """How a command in the workspace of status ``st`` is confined here; every gap becomes
    a note."""
    notes: list[str] = []
    run_as: list[int] | str | None = None
    owner: tuple[int, int] | None = None
    if report.running_as_root:
        if st.st_uid != 0 and report.can_drop_user:
            run_as = [st.st_uid, st.st_gid]
            owner = (st.st_uid, st.st_gid)
        elif report.can_drop_capabilities:
            run_as = "capless-root"
            notes.append(
                "the command runs as root (without capabilities) because root owns the "
                "workspace, so its process count is NOT limited (RLIMIT_NPROC does not apply to "
                "root) and root's Unix sockets (such as /var/run/docker.sock) are reachable; "
                "chown the workspace to an unprivileged user to have commands run as that user"
            )
        else:
            notes.append("the command runs as root WITH capabilities: they cannot be dropped")
    userns = report.user_namespace and (not report.running_as_root or owner is not None)
    netns = None
    if not network:
        if report.network_namespace == "root":
            netns = "root"
        elif report.network_namespace == "userns" and userns:
            netns = "userns"
        if netns is None:
            notes.append(f"network isolation {report.network_isolation}")
    if not report.filesystem_enforced:
        notes.append(f"filesystem confinement NOT enforced ({report.landlock_detail})")
    nproc_mode = "none"
    if userns:
        nproc_mode = "namespace"
    elif sys.platform == "linux" and (not report.running_as_root or owner is not None):
        nproc_mode = "count"
    spec: dict[str, Any] = {
        "landlock_abi": report.landlock_abi,
        "deny_tcp": not network,
        "netns": netns,
        "userns": userns,
        "run_as": run_as,
        "nproc_mode": nproc_mode,
        "max_processes": limits.max_processes,
        "cpu_s": limits.cpu_s,
        "memory_bytes": limits.memory_mb * 1024 * 1024,
        "fsize_bytes": limits.file_size_mb * 1024 * 1024,
        "grace_s": limits.grace_s,
    }
    return Plan(spec, owner, tuple(notes))


def rules(root: Path, tmp: str, *, capless_root: bool, network: bool) -> list[tuple[str, int]]:
    """What Landlock leaves allowed: ``(path, rights)`` pairs; everything else is denied."""
    rules = [(str(root), ll.WRITABLE_TREE), (tmp, ll.WRITABLE_TREE)]
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for folder in (*_SYSTEM_FOLDERS, *sorted(python)):
        rules.append((folder, ll.READ_EXEC))
    # Root without capabilities still owns /etc/shadow and the like: it gets only the parts
    # of /etc that every user may read.
    etc = _world_readable("/etc") if capless_root else ("/etc",)
    rules += [(path, ll.READ_EXEC) for path in etc]
    rules += [(dev, ll.DEV_RW) for dev in _DEVICES_RW]
    rules += [(dev, ll.READ_FILE) for dev in _DEVICES_RO]
    if network:
        # With systemd-resolved, /etc/resolv.conf links into /run: without it, no DNS.
        rules.append((os.path.realpath("/etc/resolv.conf"), ll.READ_FILE))
    return rules


@cache
def _world_readable(top: str) -> tuple[str, ...]:
    """The largest folders and files beneath ``top`` that every user may read."""
    parts = _readable_parts(top)
    return (top,) if parts is None else tuple(parts)


def _readable_parts(path: str) -> list[str] | None:
    """None when all of ``path`` is world-readable, else the parts of it that are."""
    try:
        st = os.lstat(path)
    except OSError:
        return []
    if stat.S_ISLNK(st.st_mode):
        return None  # Landlock checks where a link leads, not the link
    if not stat.S_ISDIR(st.st_mode):
        return None if st.st_mode & stat.S_IROTH else []
    if st.st_mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
        return []
    found: list[str] = []
    whole = True
    try:
        entries = sorted(e.path for e in os.scandir(path))
    except OSError:
        return []
    for entry in entries:
        sub = _readable_parts(entry)
        if sub is None:
            if not os.path.islink(entry):
                found.append(entry)
        else:
            whole = False
            found.extend(sub)
    return None if whole else found


def environment(tmp: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": tmp,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PAGER": "cat",
    }
    if extra:
        env.update(extra)
    return env


def workspace_status(workspace: Workspace) -> os.stat_result:
    """The workspace folder's status (its owner decides who commands run as).

    Raises:
        SandboxError: it does not exist or is not a folder.
    """
    root = workspace.root
    try:
        st = os.stat(root)
    except OSError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise SandboxError(
            f"The workspace folder {root} does not exist or is not a folder. Create it, or set "
            "WORKSPACE_DIR to an existing folder."
        )
    if root == Path("/"):
        raise SandboxError(
            "The workspace is the root folder '/', which would confine nothing. Set "
            "WORKSPACE_DIR to a project folder."
        )
    return st


def private_temp(owner: tuple[int, int] | None) -> str:
    """A temporary folder for one command (its HOME and TMPDIR), owned by whoever it runs as."""
    tmp = tempfile.mkdtemp(prefix="agent-template-cmd-")
    if owner is not None:
        os.chown(tmp, *owner)
    return tmp
