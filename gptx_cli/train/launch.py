"""`--nproc N`: the ranks run under torchrun's elastic agent, in this process
(`torch.distributed.launcher.api.elastic_launch` with a `LaunchConfig`), as `python -m gptx_cli.cli
<the same command without the launch flags>`.

- Rendezvous: one node uses the agent's c10d rendezvous on 127.0.0.1:0, so the store binds a port the
  kernel picks and keeps it open for the workers (no port probed and released). Several nodes
  (`--nnodes N --node-rank R --rdzv-endpoint HOST:PORT`) use the static rendezvous at HOST:PORT, which
  node 0 hosts, as `torchrun --nnodes N --node-rank R --master-addr HOST --master-port PORT` does.
- Restarts: `--max-restarts K` lets the agent restart the whole group K times when a rank dies; the
  restarted ranks resume from the run's last checkpoint (autoload_last_checkpoint).
- A failing rank stops the others (the agent's monitor); the launcher says which rank, with its exit
  code or signal, in one line, and exits with that code.
- Signals: SIGINT, SIGTERM and SIGUSR1 reach the launcher only (the workers run in sessions of their
  own) and the agent forwards each to every rank once. The ranks save at their next step boundary and
  exit; the launcher then exits 0, or REQUEUE_EXIT_CODE after SIGUSR1 (SLURM's `--signal=USR1@T`
  warning before preemption or the time limit: "checkpointed, requeue me").
- `kill -9` of the launcher leaves no rank behind: each rank asks the kernel for SIGKILL when the
  launcher dies (`distributed.die_with_launcher`, `prctl(PR_SET_PDEATHSIG)`) as it joins the group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from gptx_cli.distributed import ENV_LAUNCHER_PID, REQUEUE_EXIT_CODE, LaunchOptions
from gptx_cli.errors import GptxError, UsageError

# Seconds the agent waits, after forwarding a stop signal, for the ranks to save and exit before it
# kills them (torch's TORCH_ELASTIC_SHUTDOWN_TIMEOUT, whose default of 30 s is short for a checkpoint).
SHUTDOWN_SECONDS = int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "900"))
LAUNCH_FLAGS = (
    *("--nproc", "--nproc-per-node", "--nproc_per_node"),
    *("--max-restarts", "--nnodes", "--node-rank", "--rdzv-endpoint"),
)


def _config(opts: LaunchOptions) -> LaunchConfig:
    if opts.nnodes == 1:
        backend, endpoint, rdzv = "c10d", "127.0.0.1:0", {}
        run_id = f"gptx-{uuid.uuid4().hex[:12]}"
    else:
        if opts.node_rank is None or opts.rdzv_endpoint is None:
            raise UsageError("--nnodes above 1 needs --node-rank R and --rdzv-endpoint HOST:PORT (node 0's)")
        if not 0 <= opts.node_rank < opts.nnodes:
            raise UsageError(
                f"--node-rank {opts.node_rank}: must be in [0, {opts.nnodes}) for --nnodes {opts.nnodes}"
            )
        host, _, port = opts.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--rdzv-endpoint {opts.rdzv_endpoint}: expected HOST:PORT")
        backend, endpoint, rdzv = "static", opts.rdzv_endpoint, {"rank": opts.node_rank}
        run_id = "gptx"
    return LaunchConfig(
        min_nodes=opts.nnodes,
        max_nodes=opts.nnodes,
        nproc_per_node=opts.nproc,
        run_id=run_id,
        rdzv_backend=backend,
        rdzv_endpoint=endpoint,
        rdzv_configs=rdzv,
        max_restarts=opts.max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
        signals_to_handle="SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        shutdown_timeout=SHUTDOWN_SECONDS,
    )


@contextlib.contextmanager
def _quiet_agent() -> Iterator[None]:
    """torchelastic logs every rendezvous and restart at INFO/WARNING; gptx says what matters itself."""
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.distributed.launcher")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def launch(argv: list[str], opts: LaunchOptions) -> int:
    """Run `gptx <argv>` (without its launch flags) on `opts.nproc` local ranks; returns the exit code."""
    if opts.nproc < 1:
        raise UsageError(f"--nproc must be at least 1 (got {opts.nproc})")
    config = _config(opts)
    # share the cores between the processes; the ranks die with this process
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // opts.nproc)))
    os.environ[ENV_LAUNCHER_PID] = str(os.getpid())
    try:
        with _quiet_agent():
            elastic_launch(config, sys.executable)("-m", "gptx_cli.cli", *strip_launch_flags(argv))
        return 0
    except SignalException as stop:  # forwarded to the ranks, which saved and exited
        return REQUEUE_EXIT_CODE if stop.sigval == signal.SIGUSR1 else 0
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        code = failure.exitcode
        how = f"was killed by {failure.signal_name()}" if code < 0 else f"exited with code {code}"
        restarts = f" after {opts.max_restarts} restart(s)" if opts.max_restarts else ""
        raise GptxError(
            f"rank {rank} {how}{restarts}; the other ranks were stopped",
            hint="its own error is above; --max-restarts K restarts the group from the last checkpoint",
            exit_code=code if code > 0 else 128 - code,
        ) from None


def strip_launch_flags(argv: list[str]) -> list[str]:
    """argv without the launcher's flags (`--nproc N`, `--max-restarts=K`, ...): the ranks get torchrun's
    environment instead."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in LAUNCH_FLAGS:
            skip = True
            continue
        if arg.split("=", 1)[0] in LAUNCH_FLAGS:
            continue
        out.append(arg)
    return out
