"""The convert CLI's `--distributed` flags and the `jax.distributed` start they ask for."""

from __future__ import annotations

import argparse

import jax

CPU_COLLECTIVES = ("gloo", "mpi")


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group("several processes (every process runs the same command)")
  g.add_argument("--distributed", action="store_true",
                 help="run as one of several processes (jax.distributed); without the flags below, "
                      "the cluster (SLURM, Cloud TPU, ...) is detected")
  g.add_argument("--coordinator", help="HOST:PORT of process 0")
  g.add_argument("--num-processes", type=int, help="how many processes run the command")
  g.add_argument("--process-id", type=int, help="this process's index, 0 .. N-1")
  g.add_argument("--cpu-collectives", choices=CPU_COLLECTIVES,
                 help="collectives between CPU processes (gloo for CPU-only runs and tests)")


def initialize_from_flags(a: argparse.Namespace) -> None:
  """Starts jax.distributed when --distributed is given (before JAX touches a device)."""
  given = [f"--{n.replace('_', '-')}" for n in ("coordinator", "num_processes", "process_id", "cpu_collectives")
           if getattr(a, n) is not None]
  if not a.distributed:
    if given:
      raise ValueError(f"{', '.join(given)} given without --distributed; add --distributed to run as one of "
                       "several processes")
    return
  if a.num_processes is not None and a.num_processes < 1:
    raise ValueError(f"--num-processes {a.num_processes}; expected a positive count")
  if a.process_id is not None and a.num_processes is not None and not 0 <= a.process_id < a.num_processes:
    raise ValueError(f"--process-id {a.process_id}; expected 0 .. {a.num_processes - 1} for --num-processes "
                     f"{a.num_processes}")
  if a.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", a.cpu_collectives)
  jax.distributed.initialize(coordinator_address=a.coordinator, num_processes=a.num_processes,
                             process_id=a.process_id)
