"""Landlock, the Linux security module that lets an unprivileged process confine itself.

Only ``ctypes`` and ``os``: the launcher imports this for every command. A ruleset lists what
stays allowed beneath a few folders; everything the ruleset *handles* and no rule grants is
denied to the process and everything it starts, for good. Which rights exist depends on the
kernel's Landlock ABI version, so the ruleset handles exactly those the kernel knows:

* v1 (Linux 5.13): execute, read, write, list, create and remove files and folders.
* v2 (5.19): ``REFER``, moving or linking a file into another folder.
* v3 (6.2): ``TRUNCATE``.
* v4 (6.7): TCP ``bind`` and ``connect``.
* v5 (6.10): ``IOCTL_DEV``, ioctl on device files.
* v6 (6.12): scopes: no signals to, and no abstract Unix sockets of, processes outside.
* v7 (6.15): audit logging only; no new rights.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from typing import Any

__all__ = [
    "ABI_NET",
    "ABI_SCOPE",
    "DEV_RW",
    "FILE_ONLY",
    "READ_EXEC",
    "WRITABLE_TREE",
    "LandlockError",
    "abi_version",
    "enforce",
    "fs_rights",
    "prepare",
]

# Syscall numbers: the same on every architecture Linux added them to together (all but alpha
# and the MIPS ABIs, which number differently).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_SUPPORTED_MACHINES = {"x86_64", "amd64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x"}

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

ABI_NET = 4
ABI_SCOPE = 6

_FS_V1 = (1 << 13) - 1
READ_EXEC = EXECUTE | READ_FILE | READ_DIR
FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # rights a file rule may carry
DEV_RW = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV
# Creating device nodes is never granted: a device node in the workspace would reach the disk.
WRITABLE_TREE = (_FS_V1 | REFER | TRUNCATE) & ~(MAKE_CHAR | MAKE_BLOCK)


class LandlockError(OSError):
    """A Landlock call failed; the message names the step and the kernel's reason."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


_libc: ctypes.CDLL | None = None


def _syscall() -> Any:  # libc's syscall(2), as a ctypes function
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fn = _libc.syscall
    fn.restype = ctypes.c_long
    return fn


def _fail(step: str) -> LandlockError:
    err = ctypes.get_errno()
    return LandlockError(err, f"{step}: {os.strerror(err)}")


def abi_version() -> tuple[int, str]:
    """The kernel's Landlock ABI version, or 0 and the reason it cannot be used."""
    if sys.platform != "linux":
        return 0, f"Landlock is a Linux feature; this is {sys.platform}"
    machine = os.uname().machine.lower()
    if machine not in _SUPPORTED_MACHINES:
        return 0, f"Landlock syscall numbers are not known for {machine}"
    version = _syscall()(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    if version >= 1:
        return int(version), ""
    err = ctypes.get_errno()
    if err == 38:  # ENOSYS
        return 0, "the kernel has no Landlock (built without CONFIG_SECURITY_LANDLOCK)"
    if err == 95:  # EOPNOTSUPP
        return 0, "the kernel has Landlock but it is disabled (add landlock to the lsm= boot list)"
    return 0, f"Landlock is unavailable: {os.strerror(err)}"


def fs_rights(abi: int) -> int:
    """Every filesystem right the kernel of this ABI version knows (and so can deny)."""
    rights = _FS_V1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def prepare(abi: int, rules: list[tuple[str, int]], *, deny_tcp: bool) -> int:
    """A ruleset allowing only ``rules`` (``(path, rights)`` pairs); its file descriptor.

    Opening the paths happens here, while the process may still see them all (before it drops
    to a user who cannot). A path that does not exist is skipped (``/lib32`` on most machines).

    Raises:
        LandlockError: a syscall failed.
    """
    handled = fs_rights(abi)
    attr = _RulesetAttr(handled, 0, 0)
    if deny_tcp and abi >= ABI_NET:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # and no rule: no TCP at all
    if abi >= ABI_SCOPE:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    syscall = _syscall()
    ruleset = int(syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0))
    if ruleset < 0:
        raise _fail("landlock_create_ruleset")
    try:
        for path, rights in rules:
            _add_path_rule(syscall, ruleset, path, rights & handled)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def enforce(ruleset: int) -> None:
    """Confine this process, and everything it starts, to the ruleset, for good.

    The caller must have set ``no_new_privs`` (or hold CAP_SYS_ADMIN).

    Raises:
        LandlockError: the kernel refused; the process is then NOT confined.
    """
    try:
        if _syscall()(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), 0) != 0:
            raise _fail("landlock_restrict_self")
    finally:
        os.close(ruleset)


def _add_path_rule(syscall: Any, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= FILE_ONLY  # folder rights on a file rule are an error (EINVAL)
        if not rights:
            return
        rule = _PathBeneathAttr(rights, fd)
        if syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
            raise _fail(f"landlock_add_rule({path})")
    finally:
        os.close(fd)
