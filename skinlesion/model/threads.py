"""The thread policy of a serving process: inference threads sized to the cores, waiting passively.

An OpenMP worker that finds no work spins for a while before sleeping (``OMP_WAIT_POLICY=ACTIVE``
behaviour); on a machine shared with other processes those spinning threads take the cores the
other processes' work needs, and one forward can take many times longer. The policy:

- ``threads``: one inference thread per core this process may run on (``os.sched_getaffinity``),
  shared among the serving processes of the machine (``skinlesion serve --workers``);
- passive waiting: ``OMP_WAIT_POLICY=PASSIVE`` for torch's OpenMP pool, ONNX Runtime's own
  ``session.intra_op.allow_spinning = 0``; OpenVINO's CPU plugin uses TBB, whose workers sleep.

OpenMP reads its environment once, when the library is loaded, so :meth:`ThreadPolicy.apply` must run
before torch (or a runtime) is imported: ``skinlesion serve`` applies it first thing. Values the
operator set in the environment win. This module imports no numerical library on purpose.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass

#: libraries that read the thread environment when they are loaded
_THREADED_LIBRARIES = ("torch", "onnxruntime", "openvino")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; the CPU count where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPolicy:
    """``threads`` inference threads per forward; ``passive``: idle workers sleep, never spin."""

    threads: int
    passive: bool = True

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")

    @classmethod
    def for_machine(cls, environ: MutableMapping[str, str] | None = None, *,
                    processes: int = 1) -> ThreadPolicy:
        """The policy for one of ``processes`` serving processes on this machine:
        ``OMP_NUM_THREADS`` where the operator set it, else the usable cores shared among the
        processes (at least one thread each); passive unless ``OMP_WAIT_POLICY`` says ``ACTIVE``."""
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        env = os.environ if environ is None else environ
        threads = env.get("OMP_NUM_THREADS", "")
        return cls(threads=int(threads) if threads.isdigit() and int(threads) > 0
                   else max(1, usable_cores() // processes),
                   passive=env.get("OMP_WAIT_POLICY", "PASSIVE").upper() != "ACTIVE")

    def environment(self) -> dict[str, str]:
        """The variables that carry the policy to OpenMP and the BLAS libraries."""
        return {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
                "OMP_WAIT_POLICY": "PASSIVE" if self.passive else "ACTIVE"}

    def apply(self, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
        """Put the policy into the environment (variables already set are left as they are) and
        return what the environment now says. Raises RuntimeError when a threaded library is already
        loaded in this process: it would not read the policy any more."""
        loaded = [name for name in _THREADED_LIBRARIES if name in sys.modules]
        if environ is None and loaded:
            raise RuntimeError(f"the thread policy must be applied before {', '.join(loaded)} is "
                               "imported (OpenMP reads its environment once, at load)")
        env = os.environ if environ is None else environ
        for name, value in self.environment().items():
            env.setdefault(name, value)
        return {name: env[name] for name in self.environment()}

    def onnxruntime_options(self) -> dict[str, str | int]:
        """ONNX Runtime session settings: intra-op threads and (passive) no spinning."""
        return {"intra_op_num_threads": self.threads, "inter_op_num_threads": 1,
                "session.intra_op.allow_spinning": "0" if self.passive else "1",
                "session.inter_op.allow_spinning": "0" if self.passive else "1"}

    def openvino_config(self) -> dict[str, str]:
        """OpenVINO CPU plugin settings: one stream of ``threads`` threads, lowest latency, fp32."""
        return {"INFERENCE_NUM_THREADS": str(self.threads), "NUM_STREAMS": "1",
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
