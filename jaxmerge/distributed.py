"""Multi-process runs through JAX's own distributed runtime: every process runs the same command.

Process settings come from CLI flags or, failing those, the environment: JAX_COORDINATOR_ADDRESS (read by JAX
itself) with JAXMERGE_NUM_PROCESSES / JAXMERGE_PROCESS_ID. With a coordinator but no count/id, JAX detects them
from the cluster (SLURM, Open MPI, Kubernetes, TPU pods). With none of these the run is single-process.
Afterwards `jax.devices()` lists every process's devices, the mesh spans all of them, and only process 0
(`is_primary`) writes files; orbax coordinates checkpoint saves across processes.
"""
from __future__ import annotations

import os

from jaxmerge.errors import expect

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAXMERGE_NUM_PROCESSES",
       "process_id": "JAXMERGE_PROCESS_ID"}


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
    return {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}


def _int(environ, name: str) -> int | None:
    value = environ.get(ENV[name])
    if value is None:
        return None
    expect(value.strip().lstrip("-").isdigit(), f"expected an integer in ${ENV[name]}, found {value!r}")
    return int(value)


def initialize(coordinator=None, num_processes=None, process_id=None) -> bool:
    """Join the run's processes (call before any other JAX work); False when the run is single-process."""
    found = settings(coordinator, num_processes, process_id)
    if found is None:
        return False
    import jax
    jax.distributed.initialize(**found)
    return True


def is_primary() -> bool:
    import jax
    return jax.process_index() == 0
