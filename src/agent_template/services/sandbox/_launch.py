"""The launcher the server starts for every command: it confines a child and supervises it.

Started as ``python -I -c <bootstrap> SPEC COMMAND`` in a session of its own, with the scrubbed
environment already in place. It becomes a *subreaper* (orphaned descendants are re-parented
to it, even those that left the process group with ``setsid``), forks the child that confines
itself and ``execve``\\ s ``/bin/sh -c COMMAND``, then waits. When the shell exits it kills
whatever the command left behind; on SIGTERM (the server's timeout or cancellation) it sends
SIGTERM to the command's process group, SIGKILL after the grace period, and sweeps the rest.
It reports on a status pipe: the child's pid, then ``exit CODE CPU LEFTOVERS`` or
``signal NUMBER CPU LEFTOVERS``, or ``error STEP: REASON`` when confinement could not be
applied (the command then never runs; exit status 125).

``--probe`` prints, as JSON, what this machine lets a command be confined with.

Imports stay tiny: this starts once per command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from agent_template.services.sandbox import _landlock, _privileges

SETUP_FAILED = 125
_LINUX = sys.platform == "linux"
_POLL_S = 0.02
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM)


class _Terminate(Exception):
    """The server asked the command to stop."""


def _raise_terminate(signum: int, frame: object) -> None:
    raise _Terminate


def _report(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--probe"]:
        sys.stdout.write(json.dumps(probe()))
        return 0
    spec: dict[str, Any] = json.loads(argv[1])
    command = argv[2]
    status_fd: int = spec["status_fd"]
    os.set_inheritable(status_fd, False)
    if _LINUX:
        _privileges.set_subreaper()
    signal.signal(signal.SIGTERM, _raise_terminate)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # until the child is known
    pid = os.fork()
    if pid == 0:
        _child(spec, command, status_fd)  # never returns
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # the child does it too; whichever runs first wins the race
    _report(status_fd, f"pid {pid}")
    stopped = False
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        _, wstatus, usage = os.wait4(pid, 0)
    except _Terminate:
        stopped = True
        wstatus, usage = _stop(pid, float(spec["grace_s"]))
    leftovers = _kill_leftovers(pid)
    if stopped:
        leftovers = 0  # everything was being stopped anyway: nothing was left behind
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        _report(status_fd, f"signal {sig} {cpu:.3f} {leftovers}")
        return 128 + sig
    code = os.WEXITSTATUS(wstatus)
    _report(status_fd, f"exit {code} {cpu:.3f} {leftovers}")
    return code


def _child(spec: dict[str, Any], command: str, status_fd: int) -> None:
    """Confine this process as the spec says, then become the shell; on any failure, exit."""
    step = "starting"
    try:
        launcher = os.getppid()
        os.setpgid(0, 0)
        for sig in _RESET_SIGNALS:  # Python ignores SIGPIPE and SIGXFSZ; the shell must not
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        abi = int(spec["landlock_abi"])
        ruleset = None
        if abi:
            step = "preparing the Landlock rules"
            rules = [(str(path), int(rights)) for path, rights in spec["rules"]]
            ruleset = _landlock.prepare(abi, rules, deny_tcp=bool(spec["deny_tcp"]))
        if spec["netns"] == "root":
            step = "creating a network namespace"
            _privileges.unshare(_privileges.CLONE_NEWNET)
        step = "dropping privileges"
        run_as = spec["run_as"]
        if run_as == "capless-root":
            _privileges.drop_capabilities()
        elif run_as:
            _privileges.drop_to(int(run_as[0]), int(run_as[1]))
        if spec["userns"]:
            step = "creating a user namespace"
            extra = _privileges.CLONE_NEWNET if spec["netns"] == "userns" else 0
            _privileges.enter_user_namespace(extra)
        step = "setting resource limits"
        _privileges.set_limits(
            cpu_s=int(spec["cpu_s"]),
            memory_bytes=int(spec["memory_bytes"]),
            fsize_bytes=int(spec["fsize_bytes"]),
            nproc=_nproc(spec),
        )
        if _LINUX:
            step = "setting no_new_privs"
            _privileges.set_parent_death_signal(signal.SIGKILL)  # after every credential change
            if os.getppid() != launcher:
                os._exit(SETUP_FAILED)  # the launcher died meanwhile
            _privileges.no_new_privs()
        if ruleset is not None:
            step = "applying Landlock"
            _landlock.enforce(ruleset)
        step = "starting /bin/sh"
        os.execve("/bin/sh", ["/bin/sh", "-c", command], spec["env"])
    except BaseException as exc:
        _report(status_fd, f"error {step}: {exc}")
    os._exit(SETUP_FAILED)


def _nproc(spec: dict[str, Any]) -> int | None:
    """RLIMIT_NPROC: the kernel compares it with every task of the real uid (in its user
    namespace), so outside a namespace of its own the command gets what the uid runs now
    plus its allowance."""
    mode = spec["nproc_mode"]
    if mode == "namespace":
        return int(spec["max_processes"])
    if mode == "count":
        return _privileges.count_tasks(os.getuid()) + int(spec["max_processes"])
    return None


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop(pid: int, grace_s: float) -> tuple[int, Any]:
    """SIGTERM to the command's group, SIGKILL once the grace period is over."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        done, wstatus, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return wstatus, usage
        time.sleep(_POLL_S)
    _killpg(pid, signal.SIGKILL)
    _, wstatus, usage = os.wait4(pid, 0)
    return wstatus, usage


def _kill_leftovers(pgid: int) -> int:
    """Kill and reap every process the command left: its group, then every orphan that was
    re-parented to this subreaper, until none is left. Returns how many were reaped."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the server's SIGKILL is the fallback now
    _killpg(pgid, signal.SIGKILL)
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
            continue
        for child in _children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return reaped
        reaped += 1


def _children() -> list[int]:
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass  # a kernel without CONFIG_PROC_CHILDREN: look at every process's parent
    found: list[int] = []
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return found  # no /proc: the process group kill is all there is
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(me):
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- probe


def probe() -> dict[str, Any]:
    """What this machine allows, each tried for real in a throwaway child process.

    Each value is ``""`` when the step worked, else the reason it did not.
    """
    abi, reason = _landlock.abi_version()
    result: dict[str, Any] = {
        "landlock_abi": abi,
        "landlock_detail": reason,
        "euid": os.geteuid(),
        "kernel": " ".join(os.uname()[2:3] + os.uname()[4:5]),
    }
    if abi:
        result["landlock_enforce"] = _try(lambda: _confine_probe(abi))
    if os.geteuid() == 0:
        nobody = 65534
        result["netns"] = _try(lambda: _privileges.unshare(_privileges.CLONE_NEWNET))
        result["drop_user"] = _try(lambda: _privileges.drop_to(nobody, nobody))
        result["userns"] = _try(lambda: _userns_as(nobody))
        result["drop_caps"] = _try(_privileges.drop_capabilities)
    else:
        result["netns"] = _try(lambda: _privileges.enter_user_namespace(_privileges.CLONE_NEWNET))
        result["userns"] = _try(_privileges.enter_user_namespace)
    return result


def _userns_as(uid: int) -> None:
    _privileges.drop_to(uid, uid)
    _privileges.enter_user_namespace()


def _confine_probe(abi: int) -> None:
    ruleset = _landlock.prepare(abi, [("/", _landlock.READ_EXEC)], deny_tcp=True)
    _privileges.no_new_privs()
    _landlock.enforce(ruleset)


def _try(step: Callable[[], object]) -> str:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            step()
        except BaseException as exc:
            os.write(write_end, str(exc).encode("utf-8", "replace")[:500] or b"failed")
            os._exit(1)
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode("utf-8", "replace")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
