"""Process groups that end: a failure in one process reaches every process, and the group is always destroyed.

Under ``torchrun`` a process that fails between two collectives would leave the others waiting in their next
collective (a barrier, an all-reduce of gradients) until the process group's timeout, half an hour: one rank
that cannot read a file used to hang the whole job. Here a failing process first records its error in the
rendezvous store (which the launcher's agent holds, so it outlives any worker) and then destroys its process
group: the others' pending collectives fail at once ("connection closed by peer"), they read the recorded
error and raise it, named, as :class:`PeerFailure`. :func:`agree_on_outcome` lets a sweep learn every
process's outcome of one run through the store (not through the possibly broken group) and start a fresh group
for the next run.

A process group that is still alive when the interpreter exits is destroyed by an ``atexit`` hook: gloo's
threads torn down during interpreter shutdown could otherwise abort the process (``terminate called without an
active exception``, SIGABRT) after all the work was done.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mghft.errors import MghftError

OUTCOME_TIMEOUT = datetime.timedelta(minutes=30)
"""How long a process waits for the others' outcome of a run (the default process-group timeout): a process
that is still computing reaches its next collective, finds the group broken and reports, well within it."""


class PeerFailure(MghftError):
    """Another process of the distributed run failed; the message names its rank and its error (exit code 1)."""


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class _Session:
    backend: str
    store: dist.Store  # the rendezvous store, kept past the group's destruction
    generation: int = 0  # process groups started so far (all processes count alike)
    outcomes: int = 0  # outcomes agreed so far
    failures: int = 0  # failures recorded so far, for naming the first one


_session: _Session | None = None


def setup_distributed() -> DistInfo:
    """Initialise the process group when launched by ``torchrun`` (NCCL on GPUs, gloo on CPU).

    Idempotent: later calls return the same ranks. The group is destroyed at interpreter exit at the latest.
    """
    global _session
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        backend = "nccl" if cuda else "gloo"
        if _session is None:
            dist.init_process_group(backend)
            _session = _Session(backend, dist.distributed_c10d._get_default_store())
            atexit.register(teardown_distributed)
        else:
            _restart_group()
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank, world, local, device)


def teardown_distributed() -> None:
    """Destroy the process group if there is one (local: waits for no other process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _restart_group() -> None:
    """A fresh default group after the last one was destroyed, on keys of its own in the rendezvous store."""
    assert _session is not None
    teardown_distributed()
    _session.generation += 1
    store = dist.PrefixStore(f"mghft/group-{_session.generation}", _session.store)
    dist.init_process_group(
        _session.backend, store=store, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"])
    )


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


def record_failure(err: BaseException) -> str:
    """Record this process's failure for the others and break the group so that none of them waits on it.

    Returns the error to report: this process's own, or, when its failure only followed another process's
    (a collective that failed because that process left), the other process's, with its rank.
    """
    own = _describe(err)
    if _session is None or not dist.is_initialized():
        return own
    store = _failure_store()
    first = _first_failure(store)
    rank = dist.get_rank()
    store.set(f"{store.add('count', 1) - 1}", f"rank {rank}: {own}")
    teardown_distributed()
    return first or f"rank {rank}: {own}"


def _failure_store() -> dist.Store:
    """Where the failures of the current group are recorded (each group generation has its own keys)."""
    assert _session is not None
    return dist.PrefixStore(f"mghft/failures-{_session.generation}", _session.store)


def _first_failure(store: dist.Store) -> str | None:
    if int(store.add("count", 0)) == 0:
        return None
    store.wait(["0"], datetime.timedelta(seconds=10))
    return store.get("0").decode()


@contextlib.contextmanager
def failures_reach_every_process() -> Iterator[None]:
    """Run a whole distributed job: an exception here breaks the group and names the first failure everywhere.

    Raises:
        PeerFailure: this process failed because another one did (the message names that process's error).
    """
    try:
        yield
    except (Exception, KeyboardInterrupt) as err:
        if _session is None or not dist.is_initialized():
            raise
        first = record_failure(err)
        if not first.startswith(f"rank {_rank()}: "):
            raise PeerFailure(f"the distributed run stopped: {first}") from err
        raise
    finally:
        teardown_distributed()


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def agree_on_outcome(info: DistInfo, error: str) -> str:
    """Every process's outcome of one run, through the rendezvous store: the first error, or ``""``.

    Call it on every process after each run, with this process's error (``""`` if none; a failed process has
    already called :func:`record_failure`). When any process failed, every process starts a fresh group, so
    that the next run begins with all processes in step.
    """
    if info.world == 1 or _session is None:
        return error
    _session.outcomes += 1
    store = dist.PrefixStore(f"mghft/outcome-{_session.outcomes}", _session.store)
    store.set(f"rank{info.rank}", error or "-")
    keys = [f"rank{r}" for r in range(info.world)]
    store.wait(keys, OUTCOME_TIMEOUT)
    errors = [store.get(k).decode() for k in keys]
    failed = [e for e in errors if e != "-"]
    if not failed:
        return ""
    first = _first_failure(_failure_store())
    _restart_group()
    return first or failed[0]
