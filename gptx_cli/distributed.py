"""The process group of a run on several processes (torchrun): who this process is (`Dist`), starting and
ending the group, and the few collectives the trainer and eval need. One process needs none of this:
`Dist()` describes it and every helper is a no-op for it. Torch is imported only when a group runs.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptx_cli.errors import UsageError

if TYPE_CHECKING:
    import torch


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# The exit code of a run stopped by SIGUSR1 after its checkpoint: "temporary failure, run me again"
# (EX_TEMPFAIL in sysexits.h). A SLURM script requeues on it (docs/distributed.md).
REQUEUE_EXIT_CODE = 75
ENV_LAUNCHER_PID = "GPTX_LAUNCHER_PID"  # set by train.launch for its ranks: the pid they die with
# Seconds a collective waits for the other ranks before it fails (so a rank that left early, or hangs,
# never holds the others forever); GPTX_COLLECTIVE_TIMEOUT changes it (docs/distributed.md).
COLLECTIVE_TIMEOUT_SECONDS = 1800
PR_SET_PDEATHSIG = 1


@dataclass
class LaunchOptions:
    """`--nproc N [--nnodes N --node-rank R --rdzv-endpoint HOST:PORT] [--max-restarts K]` (train.launch)."""

    nproc: int
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    max_restarts: int = 0


def collective_timeout() -> float:
    raw = os.environ.get("GPTX_COLLECTIVE_TIMEOUT", str(COLLECTIVE_TIMEOUT_SECONDS))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise UsageError(f"GPTX_COLLECTIVE_TIMEOUT={raw}: must be a number of seconds > 0")
    return value


def die_with_launcher() -> None:
    """In a rank started by `gptx ... --nproc N` (train.launch): SIGKILL this process when the launcher
    dies (Linux), and exit now if it already has. Elsewhere, or under another launcher, nothing."""
    launcher = os.environ.get(ENV_LAUNCHER_PID)
    if not launcher or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(launcher):  # the launcher died before the prctl took effect
        os._exit(1)


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(target_device: str) -> Dist:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); a single process otherwise."""
    import torch

    if target_device == "GPU" and not torch.cuda.is_available():
        raise UsageError("--target-device GPU: no CUDA device is visible")
    use_cuda = target_device == "GPU" or (target_device != "CPU" and torch.cuda.is_available())
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(device="cuda:0" if use_cuda else "cpu")
    import datetime

    import torch.distributed as dist

    die_with_launcher()
    timeout = datetime.timedelta(seconds=collective_timeout())
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # The elastic agent's store outlives a restart of the group, and torch's env:// init keeps
            # no attempt prefix in it: a restarted rank would read the dead group's addresses. Each
            # attempt gets its own key space.
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
            client = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                world,
                is_master=False,
                timeout=timeout,
            )
            store = dist.PrefixStore(f"gptx/attempt_{attempt}/", client)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend, timeout=timeout)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


def shutdown(d: Dist) -> None:
    global _HOST_GROUP, _CHECKPOINT_GROUP
    _HOST_GROUP = _CHECKPOINT_GROUP = None
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Sum a few float64 scalars over ranks (one collective)."""
    if not d.enabled:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_tensor(t: torch.Tensor) -> None:
    """Sum a device tensor over ranks in place, on the device (no host read)."""
    import torch.distributed as dist

    dist.all_reduce(t)


_HOST_GROUP: Any = None


def any_rank(flag: bool, d: Dist) -> bool:
    """Whether `flag` is set on any rank, agreed over a CPU (gloo) collective: no device sync, also
    beside NCCL (a gloo group is made on first use; every rank reaches it at the same step)."""
    if not d.enabled:
        return flag
    import torch
    import torch.distributed as dist

    global _HOST_GROUP
    group = None
    if d.device != "cpu":
        if _HOST_GROUP is None:
            _HOST_GROUP = dist.new_group(backend="gloo")
        group = _HOST_GROUP
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, group=group)
    return bool(t.tolist()[0])


_CHECKPOINT_GROUP: Any = None


def checkpoint_group(d: Dist) -> Any:
    """A gloo group for the collectives of checkpoints written in the background (DCP's planning), so
    they never interleave with the training's on the default group. Collective on first use: every rank
    makes it at the same save."""
    global _CHECKPOINT_GROUP
    if not d.enabled:
        return None
    if _CHECKPOINT_GROUP is None:
        import datetime

        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=collective_timeout())
        _CHECKPOINT_GROUP = dist.new_group(backend="gloo", timeout=timeout)
    return _CHECKPOINT_GROUP


def all_gather_object(obj: Any, d: Dist) -> list[Any]:
    if not d.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, d: Dist) -> Any:
    if not d.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()
