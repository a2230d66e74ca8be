"""Multi-process runs through JAX's own distributed runtime: every process runs the same command.

Process settings come from CLI flags or, failing those, the environment: JAX_COORDINATOR_ADDRESS (read by JAX
itself) with JAXMERGE_NUM_PROCESSES / JAXMERGE_PROCESS_ID. With a coordinator but no count/id, JAX detects them
from the cluster (SLURM, Open MPI, Kubernetes, TPU pods). With none of these the run is single-process.
Afterwards `jax.devices()` lists every process's devices, the mesh spans all of them, and only process 0
(`is_primary`) writes files; orbax coordinates checkpoint saves across processes.

JAX's runtime reacts badly to a bad address (`notahost:xyz` segfaulted, `127.0.0.1:0` hung, an unreachable
coordinator aborted after 5 minutes with a C++ stack), so the address is checked here first: HOST:PORT with a
port in 1..65535 and a host that resolves; a process other than 0 waits at most the timeout for the
coordinator to accept connections; and a watchdog ends the process with one line (exit 1) if JAX has not
joined all processes within the timeout, before JAX's own abort. The timeout is `timeout` seconds, else
$JAXMERGE_COORDINATOR_TIMEOUT, else DEFAULT_TIMEOUT.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time

from jaxmerge.errors import EnvironmentFault, JaxmergeError, expect

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAXMERGE_NUM_PROCESSES",
       "process_id": "JAXMERGE_PROCESS_ID", "timeout": "JAXMERGE_COORDINATOR_TIMEOUT"}
DEFAULT_TIMEOUT = 120.0
HOST = re.compile(r"([A-Za-z0-9._-]+):(\d{1,5})")
V6 = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})")


def add_arguments(parser) -> None:
    parser.add_argument("--coordinator", help=f"host:port of process 0 for a multi-process run "
                                              f"(or ${ENV['coordinator']})")
    parser.add_argument("--num-processes", type=int, help=f"processes in the run (or ${ENV['num_processes']})")
    parser.add_argument("--process-id", type=int, help=f"this process's index, 0..N-1 (or ${ENV['process_id']})")


def settings(coordinator=None, num_processes=None, process_id=None, environ=os.environ) -> dict | None:
    """The distributed settings from flags, else environment; None for a single-process run."""
    coordinator = coordinator or environ.get(ENV["coordinator"])
    num_processes = num_processes if num_processes is not None else _int(environ, "num_processes")
    process_id = process_id if process_id is not None else _int(environ, "process_id")
    if coordinator is None:
        expect(num_processes is None and process_id is None,
               "expected --coordinator host:port with --num-processes/--process-id, found no coordinator")
        return None
    expect((num_processes is None) == (process_id is None),
           f"expected both --num-processes and --process-id (or neither), found {num_processes} and {process_id}")
    if num_processes is not None:
        expect(num_processes >= 1 and 0 <= process_id < num_processes,
               f"expected 0 <= process id < number of processes, found {process_id} of {num_processes}")
    host, port = parse_address(coordinator)
    return {"coordinator_address": f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
            "num_processes": num_processes, "process_id": process_id}


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [ADDR]:PORT) -> (host, port), the port in 1..65535."""
    match = V6.fullmatch(str(text).strip()) or HOST.fullmatch(str(text).strip())
    expect(match is not None, f"expected --coordinator as host:port (e.g. 10.0.0.1:1234), found {text!r}")
    expect(1 <= int(match[2]) <= 65535, f"expected a --coordinator port in 1..65535, found {text!r}")
    return match[1], int(match[2])


def _int(environ, name: str) -> int | None:
    value = environ.get(ENV[name])
    if value is None:
        return None
    expect(value.strip().lstrip("-").isdigit(), f"expected an integer in ${ENV[name]}, found {value!r}")
    return int(value)


def timeout_seconds(timeout=None, environ=os.environ) -> float:
    value = timeout if timeout is not None else environ.get(ENV["timeout"], DEFAULT_TIMEOUT)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    expect(1 <= seconds <= 86400, f"expected a coordinator timeout of 1..86400 seconds (${ENV['timeout']}), "
                                  f"found {value!r}")
    return seconds


def resolve_host(host: str, port: int) -> None:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:  # a typo far more often than a DNS outage: bad input
        raise JaxmergeError(f"expected the coordinator host {host!r} to resolve, found: {e}") from None


def wait_for_coordinator(host: str, port: int, seconds: float) -> None:
    """Until `seconds` pass, try to connect to the coordinator (process 0 may start a little later)."""
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=min(2.0, seconds)).close()
            return
        except OSError as e:
            last = e.strerror or type(e).__name__
            time.sleep(0.25)
    raise EnvironmentFault(f"expected the coordinator at {host}:{port} to accept connections within {seconds:g} "
                           f"s, found it unreachable ({last}): start process 0 first, or check the address")


def _watchdog(seconds: float, what: str) -> threading.Timer:
    """One line and exit 1 if JAX has not returned in time (its own timeout aborts with a C++ stack)."""
    def fire():
        sys.stderr.write(f"jaxmerge: environment error: expected {what} within {seconds:g} s, found it did not "
                         f"happen (set ${ENV['timeout']} to wait longer)\n")
        sys.stderr.flush()
        os._exit(1)
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def initialize(coordinator=None, num_processes=None, process_id=None, timeout=None) -> bool:
    """Join the run's processes (call before any other JAX work); False when the run is single-process."""
    found = settings(coordinator, num_processes, process_id)
    if found is None:
        return False
    seconds = timeout_seconds(timeout)
    host, port = parse_address(found["coordinator_address"])
    resolve_host(host, port)
    if found["process_id"] not in (None, 0):
        wait_for_coordinator(host, port, seconds)
    import jax
    timer = _watchdog(seconds, f"all processes to join the coordinator at {host}:{port}")
    try:
        jax.distributed.initialize(**found, initialization_timeout=int(seconds) + 30)
    finally:
        timer.cancel()
    return True


def is_primary() -> bool:
    import jax
    return jax.process_index() == 0
