"""What the launcher's child does to itself before it runs the command (Linux only).

Namespaces, a lower user, dropped capabilities and resource limits. Only ``ctypes``, ``os`` and
``resource``: this runs for every command. Each function raises ``OSError`` with a message
naming the step, so a command never runs less confined than planned.
"""

from __future__ import annotations

import ctypes
import os
import resource

__all__ = [
    "CLONE_NEWNET",
    "CLONE_NEWUSER",
    "count_tasks",
    "drop_capabilities",
    "drop_to",
    "enter_user_namespace",
    "no_new_privs",
    "set_limits",
    "set_parent_death_signal",
    "set_subreaper",
    "unshare",
]

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE, each locked, and KEEP_CAPS locked off:
# uid 0 gains no capability from execve, ever again.
_SECUREBITS_LOCKED_NOROOT = 0b1110_1111
_CAPABILITY_VERSION_3 = 0x20080522

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, step: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{step}: {os.strerror(err)}")


def _prctl(option: int, arg: int, step: str) -> None:
    c = _c()
    _check(c.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), step)


def unshare(flags: int) -> None:
    """Move this process into new namespaces (``CLONE_NEWNET``, ``CLONE_NEWUSER``)."""
    _check(_c().unshare(flags), "unshare")


def enter_user_namespace(extra_flags: int = 0) -> None:
    """A user namespace of its own, mapping only this uid and gid to themselves.

    Inside it the kernel counts RLIMIT_NPROC for this command's processes only, and
    ``extra_flags`` (``CLONE_NEWNET``) need no privilege.
    """
    uid, gid = os.getuid(), os.getgid()
    # After a drop from root the process is not dumpable, which leaves /proc/self/*_map
    # owned by root and unwritable; the maps must be written by the process itself.
    _prctl(_PR_SET_DUMPABLE, 1, "prctl(PR_SET_DUMPABLE)")
    unshare(CLONE_NEWUSER | extra_flags)
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def drop_to(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no supplementary groups; the capabilities go with root."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def drop_capabilities() -> None:
    """Stay uid 0 but without a single capability, now or after any ``execve``."""
    c = _c()
    cap = 0
    while c.prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) == 0:
        cap += 1  # the kernel says EINVAL past its last capability
    if cap == 0:
        err = ctypes.get_errno()
        raise OSError(err, f"dropping the capability bounding set: {os.strerror(err)}")
    _prctl(_PR_SET_SECUREBITS, _SECUREBITS_LOCKED_NOROOT, "setting the securebits")
    c.prctl(_PR_CAP_AMBIENT, ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable, for both 32-bit halves
    _check(c.capset(header, data), "capset")


def no_new_privs() -> None:
    """No setuid bit or file capability can raise privileges again (Landlock needs this)."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")


def set_parent_death_signal(signum: int) -> None:
    _prctl(_PR_SET_PDEATHSIG, signum, "prctl(PR_SET_PDEATHSIG)")


def set_subreaper() -> None:
    """Orphaned descendants become this process's children, so it can find and kill them."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1, "prctl(PR_SET_CHILD_SUBREAPER)")


def count_tasks(uid: int) -> int:
    """Threads of every process whose real uid is ``uid``: what RLIMIT_NPROC compares with."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
                status = f.read()
        except OSError:
            continue  # gone meanwhile
        real_uid = threads = None
        for line in status.splitlines():
            if line.startswith("Uid:"):
                real_uid = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        if real_uid == uid:
            total += threads or 1
    return total


def set_limits(*, cpu_s: int, memory_bytes: int, fsize_bytes: int, nproc: int | None) -> None:
    """Per-process resource limits; a limit already lower stays as it is."""
    _lower(resource.RLIMIT_CORE, 0, 0)
    _lower(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)  # SIGXCPU first, SIGKILL a second later
    _lower(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    _lower(resource.RLIMIT_FSIZE, fsize_bytes, fsize_bytes)
    if nproc is not None:
        _lower(resource.RLIMIT_NPROC, nproc, nproc)


def _lower(which: int, soft: int, hard: int) -> None:
    cur_soft, cur_hard = resource.getrlimit(which)
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
    soft = min(soft, hard)
    if cur_soft != resource.RLIM_INFINITY and cur_soft < soft:
        soft = cur_soft
    resource.setrlimit(which, (soft, hard))
