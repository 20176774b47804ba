"""What the sandbox enforces on this machine, found out once by trying it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["SandboxReport", "launcher_command", "sandbox_report"]

_PROBE_TIMEOUT_S = 15.0
# Imports the launcher by file system path, so it starts the same way whether the package
# is installed, editable or on a source checkout, and ignores PYTHON* variables (-I).
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from agent_template.services.sandbox._launch import main; raise SystemExit(main(sys.argv))"
)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])

NetworkNamespace = Literal["root", "userns"]


def launcher_command(*args: str) -> list[str]:
    """The argument list that starts the launcher with ``args``."""
    return [sys.executable, "-I", "-c", _BOOTSTRAP, _PACKAGE_ROOT, *args]


@dataclass(frozen=True, slots=True)
class SandboxReport:
    """What a sandboxed command is confined by here, each item tried once for real.

    Attributes:
        platform: the system, kernel and machine.
        landlock_abi: the Landlock ABI version in force, 0 when Landlock cannot be used.
        landlock_detail: why Landlock cannot be used ("" when it can).
        network_namespace: how a command gets a network namespace of its own (``root``: the
            server is root; ``userns``: an unprivileged user namespace), or None.
        network_detail: why no network namespace can be made ("" when one can).
        user_namespace: each command can have a user namespace, in which RLIMIT_NPROC counts
            that command's processes alone.
        running_as_root: the server runs as root.
        can_drop_user: as root, commands can run as another user.
        can_drop_capabilities: as root, commands can run as root without any capability.
    """

    platform: str
    landlock_abi: int
    landlock_detail: str
    network_namespace: NetworkNamespace | None
    network_detail: str
    user_namespace: bool
    running_as_root: bool
    can_drop_user: bool = False
    can_drop_capabilities: bool = False

    @property
    def filesystem_enforced(self) -> bool:
        return self.landlock_abi >= 1

    @property
    def tcp_blocked(self) -> bool:
        return self.landlock_abi >= 4 or self.network_namespace is not None

    @property
    def network_isolation(self) -> str:
        """How a command is kept off the network when SANDBOX_NETWORK is false."""
        netns = "a network namespace of its own (no interface but a loopback that is down)"
        if self.network_namespace and self.landlock_abi >= 4:
            return f"enforced: {netns}, and Landlock denies TCP bind and connect"
        if self.network_namespace:
            return f"enforced: {netns}"
        if self.landlock_abi >= 4:
            return (
                "PARTLY enforced: Landlock denies TCP bind and connect; UDP (DNS included) and "
                f"other protocols are NOT blocked ({self.network_detail})"
            )
        return f"NOT enforced ({self.network_detail}; Landlock ABI < 4 cannot deny TCP)"

    @property
    def filesystem(self) -> str:
        if not self.filesystem_enforced:
            return f"NOT enforced ({self.landlock_detail})"
        return (
            f"enforced (Landlock ABI {self.landlock_abi}): read, write and execute in the "
            "workspace and a private temporary folder; read and execute in the system folders "
            "(/usr, /bin, /lib*, /etc, /opt) and Python's; nothing else, /proc and /home included"
        )

    @property
    def process_limit(self) -> str:
        if self.running_as_root:
            return (
                "RLIMIT_NPROC for each command when the workspace belongs to a user other than "
                "root (commands then run as that user); NOT enforced when it belongs to root "
                "(commands then run as root without capabilities, and the kernel exempts root "
                "from RLIMIT_NPROC)"
            )
        if self.user_namespace:
            return "RLIMIT_NPROC for each command (it counts only the command's own processes)"
        return (
            "RLIMIT_NPROC over all the processes of the server's user (it counts them all, so "
            "the limit is their number plus the allowance)"
        )

    def lines(self) -> list[str]:
        """The report for people, one item a line."""
        who = "root" if self.running_as_root else f"uid {os.geteuid()}"
        lines = [
            f"platform: {self.platform}; the server runs as {who}",
            f"filesystem confinement: {self.filesystem}",
            f"network (when SANDBOX_NETWORK is false): {self.network_isolation}",
        ]
        if self.landlock_abi >= 6:
            lines.append(
                "signals and abstract Unix sockets: only within the command (Landlock scopes)"
            )
        else:
            lines.append(
                "signals and abstract Unix sockets: NOT scoped (Landlock ABI < 6); "
                "a command may signal other processes of its user"
            )
        lines += [
            "Unix sockets by path (such as /var/run/docker.sock): NOT blocked (Landlock does "
            "not control connecting to them); file permissions decide",
            "processes: a session and process group of their own; on timeout, cancellation "
            "or exit the whole tree is killed (SIGTERM, then SIGKILL), daemonised children "
            "included",
            f"process count: {self.process_limit}",
            "resource limits per process: CPU time (RLIMIT_CPU), address space (RLIMIT_AS), "
            "file size (RLIMIT_FSIZE), no core dumps; wall time for the whole command",
            "privileges: no_new_privs (setuid programs gain nothing)"
            + (self._root_line() if self.running_as_root else ""),
            "environment: built from scratch (PATH, HOME and TMPDIR in a private folder, LANG, "
            "TERM=dumb, PAGER=cat); none of the server's variables",
        ]
        return lines

    def _root_line(self) -> str:
        if self.can_drop_user and self.can_drop_capabilities:
            return (
                "; commands run as the workspace's owner, or as root without capabilities "
                "when root owns the workspace"
            )
        if self.can_drop_user:
            return "; commands run as the workspace's owner; as root WITH capabilities otherwise"
        return "; commands run as root WITH capabilities (they cannot be dropped here)"

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-able data (for ``/ready`` and ``status``)."""
        data = asdict(self)
        data.update(
            filesystem_enforced=self.filesystem_enforced,
            filesystem=self.filesystem,
            network_isolation=self.network_isolation,
            tcp_blocked=self.tcp_blocked,
            process_limit=self.process_limit,
            signals_scoped=self.landlock_abi >= 6,
            process_group_kill=True,
            environment_scrubbed=True,
            rlimits=["RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_CORE"],
        )
        return data


_cached: SandboxReport | None = None
_lock = threading.Lock()


def cached_report() -> SandboxReport | None:
    """The report if it was made already, without making it."""
    return _cached


def sandbox_report() -> SandboxReport:
    """What the sandbox enforces here; the first call runs a probe process (about 0.1 s).

    Every later call returns the same report. It never raises: what cannot be found out is
    reported as not enforced, with the reason.
    """
    global _cached
    with _lock:
        if _cached is None:
            _cached = _make_report()
        return _cached


def _make_report() -> SandboxReport:
    uname = os.uname()
    platform = f"{uname.sysname} {uname.release} {uname.machine}"
    root = os.geteuid() == 0
    try:
        done = subprocess.run(
            launcher_command("--probe"),
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            env={"PATH": os.defpath, "LANG": "C.UTF-8"},
            check=False,
        )
        probe: dict[str, Any] = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        reason = f"the sandbox probe failed: {exc}"
        return SandboxReport(platform, 0, reason, None, reason, False, root)
    abi = int(probe.get("landlock_abi", 0))
    detail = str(probe.get("landlock_detail", ""))
    if abi and probe.get("landlock_enforce"):
        detail = f"Landlock ABI {abi} is present but refused a ruleset: {probe['landlock_enforce']}"
        abi = 0
    netns_error = probe.get("netns", "not tried")
    netns: NetworkNamespace | None = None
    if not netns_error:
        netns = "root" if root else "userns"
    network_detail = f"no network namespace: {netns_error}" if netns_error else ""
    return SandboxReport(
        platform=platform,
        landlock_abi=abi,
        landlock_detail=detail,
        network_namespace=netns,
        network_detail=network_detail,
        user_namespace=probe.get("userns") == "",
        running_as_root=root,
        can_drop_user=probe.get("drop_user") == "",
        can_drop_capabilities=probe.get("drop_caps") == "",
    )
