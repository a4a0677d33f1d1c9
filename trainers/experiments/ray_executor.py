"""The Ray executor of sweeps: each group of a sweep's plan is one Ray task, on any node of a cluster.

The groups are those of :func:`trainers.experiments.sweep.plan` and each task runs :func:`trainers.experiments.sweep.train_group`,
so every run trains in the same vmapped program as with the local executor and its per-epoch metrics
are bit-identical to a local sweep of the same grid (on the same kind of CPU or GPU). A task whose
worker dies (SIGKILL, a lost node) is retried (``max_retries``) and resumes from its runs' checkpoints.

The run directories must live on storage that every node sees at the same path (a shared filesystem):
workers write them, and the driver reads them once a second for the single progress view. Ray itself
is an optional extra: ``pip install 'diffenvs[ray]'``.

>>> spec = SweepSpec(tasks=("cartpole",), levels=(1, 2), seeds=(0, 1, 2))
>>> result = run_sweep_on_ray(spec, "runs/sweep")                      # a local Ray cluster of this machine
>>> result = run_sweep_on_ray(spec, "/shared/runs", address="10.0.0.1:6379")   # a running cluster
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

from trainers import rundir
from trainers.checks import check_number
from trainers.experiments.sweep import FAILED_FILE, Group, RunStatus, SweepResult, SweepSpec, plan, train_group

CONNECT_TIMEOUT_SECONDS = 3.0
"""How long the TCP check of ``address`` waits for the cluster's head before giving up."""
POLL_SECONDS = 1.0
"""Interval at which the driver reads the run directories for the progress view."""
TASK_PROCESS_TITLE = "ray::train_group_task"
"""The title of a worker process while it runs a group (:func:`train_group_task`)."""
RAY_MISSING = "the Ray executor needs ray: install the extra with pip install 'diffenvs[ray]'"


def import_ray() -> Any:
    """The ``ray`` module; ImportError with a one-line message naming the extra when it is missing."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of ``address`` "HOST:PORT"; ValueError naming ``--address`` otherwise."""
    host, colon, port = str(address).rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--address must be HOST:PORT of a Ray cluster's head node (what `ray start --head` "
                         f"prints, e.g. 10.0.0.1:6379), got {address!r}")
    return host, int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Open (and close) a TCP connection to ``address``; a one-line ValueError naming ``--address``
    within ``timeout`` seconds when nothing answers there (Ray's own connection attempts take minutes)."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.timeout:
        reason = f"no answer within {timeout:g} s"
    except socket.gaierror as error:
        reason = f"unknown host ({error.strerror})"
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
    else:
        return
    raise ValueError(f"--address {address}: no Ray cluster reachable there ({reason}); start one with "
                     f"`ray start --head` on the head node, or omit --address to start a local cluster")


def code_runtime_env() -> dict[str, Any]:
    """The Ray ``runtime_env`` that ships this process's ``diffenvs`` and ``trainers`` packages to the
    workers (``py_modules``), so workers run the driver's code even from a source checkout. Their
    dependencies (jax, optax, ...) must be installed on every node."""
    import diffenvs
    import trainers
    return {"py_modules": [str(Path(module.__file__).parent) for module in (diffenvs, trainers)],
            "excludes": ["__pycache__", "*.pyc"]}


def start_local_cluster(num_cpus: int | None = None, *, quiet: bool = True) -> str:
    """``ray.init`` of a new single-node cluster bound to 127.0.0.1 (no dashboard; ``num_cpus`` default:
    this machine's cores) with :func:`code_runtime_env`; returns its address "127.0.0.1:PORT".
    ``ray.shutdown()`` stops it."""
    ray = import_ray()
    with _loopback(), _quiet_start():
        context = ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                           _node_ip_address="127.0.0.1", runtime_env=code_runtime_env(),
                           logging_level=logging.WARNING, log_to_driver=not quiet)
    return context.address_info["address"]


@contextlib.contextmanager
def _loopback() -> Iterator[None]:
    """Let ``ray.init`` use 127.0.0.1 as this node's address. Ray replaces a loopback node or cluster
    address by the host's network address unless multi-node clusters are disabled (its switch for
    Windows and macOS); a cluster that only this machine may join is exactly that case."""
    import ray._private.ray_constants as ray_constants
    enabled = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _quiet_start() -> Iterator[None]:
    """Silence two notices of ``ray.init`` that need no action: JAX's warning that the process forks
    while multithreaded (Ray's fork immediately executes its servers) and Ray's notice that a new local
    cluster uses token authentication (its default; Ray keeps the token in its file in the home directory)."""
    auth_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = auth_logger.level
    auth_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            yield
    finally:
        auth_logger.setLevel(level)


def _same_endpoint(first: str, second: str) -> bool:
    (host_a, port_a), (host_b, port_b) = parse_address(first), parse_address(second)
    with contextlib.suppress(OSError):
        host_a, host_b = socket.gethostbyname(host_a), socket.gethostbyname(host_b)
    return port_a == port_b and host_a == host_b


@contextlib.contextmanager
def _connected(ray: Any, address: str | None, quiet: bool) -> Iterator[None]:
    """A driver connection for the sweep: the caller's (left alone), a new local cluster (shut down
    at the end) or ``address`` (disconnected at the end; the cluster keeps running)."""
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address is not None and not _same_endpoint(current, address):
            raise ValueError(f"--address {address}: this process is already connected to the Ray cluster at "
                             f"{current}; call ray.shutdown() first or pass address=None to use it")
        yield
        return
    if address is None:
        start_local_cluster(quiet=quiet)
    else:
        local = _is_loopback(parse_address(address)[0])            # a cluster bound to 127.0.0.1
        with _loopback() if local else contextlib.nullcontext(), _quiet_start():
            ray.init(address=address, runtime_env=code_runtime_env(), logging_level=logging.WARNING,
                     log_to_driver=not quiet, **({"_node_ip_address": "127.0.0.1"} if local else {}))
    try:
        yield
    finally:
        ray.shutdown()


def _check_resources(ray: Any, cpus_per_task: float, gpus_per_task: float) -> None:
    """ValueError when no node of the cluster offers a task's CPUs and GPUs (the tasks would wait forever)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    if any(node.get("CPU", 0) >= cpus_per_task and node.get("GPU", 0) >= gpus_per_task for node in nodes):
        return
    offered = ", ".join(f"{node.get('CPU', 0):g} CPU/{node.get('GPU', 0):g} GPU" for node in nodes) or "no nodes"
    raise ValueError(f"cpus_per_task={cpus_per_task:g}, gpus_per_task={gpus_per_task:g}: no node of the Ray "
                     f"cluster offers that much (nodes: {offered})")


def _last_epoch(run_dir: Path) -> int:
    """The epoch of the last complete row of ``run_dir/metrics.csv`` (0 without rows), from its tail."""
    path = run_dir / rundir.METRICS_FILE
    try:
        with open(path, "rb") as handle:
            columns = handle.readline().count(b",") + 1             # the header: rows have as many fields
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return 0
    lines = tail.split("\n")[:-1]                        # the part after the last newline is incomplete
    for line in reversed(lines):
        fields = line.split(",")
        if len(fields) == columns and fields[0].isdigit():
            return int(fields[0])
    return 0


def _progress(groups: Sequence[Group]) -> tuple[int, int]:
    """(run-epochs done, runs finished) over the groups, read from the run directories."""
    done = finished = 0
    for group in groups:
        for run in group.runs:
            epochs = run.config.epochs
            epoch = epochs if (run.run_dir / FAILED_FILE).exists() else min(_last_epoch(run.run_dir), epochs)
            done += epoch
            finished += epoch >= epochs
    return done, finished


def _clear_runs(groups: Sequence[Group]) -> None:
    """Start every run of ``groups`` afresh (``overwrite``), once on the driver: a retried task must
    resume, not restart."""
    for group in groups:
        for run in group.runs:
            for name in (rundir.CHECKPOINT_FILE, rundir.METRICS_FILE, FAILED_FILE, rundir.CONFIG_FILE):
                (run.run_dir / name).unlink(missing_ok=True)


def _write_marker(out_root: Path) -> tuple[Path, str]:
    """A file only this driver writes under ``out_root``: tasks check it to know that they see the same
    directory (the shared filesystem), not a local directory of the same name on their node."""
    token = secrets.token_hex(8)
    out_root.mkdir(parents=True, exist_ok=True)
    marker = out_root / f".ray-sweep-{token}"
    marker.write_text(token)
    return marker, token


def check_shared(marker: Path, token: str) -> None:
    """ValueError naming this host when ``marker`` does not hold ``token`` here: the node does not see
    the driver's output directory."""
    try:
        seen = marker.read_text()
    except OSError:
        seen = None
    if seen != token:
        raise ValueError(f"out_root: {marker.parent} on node {socket.gethostname()} is not the directory the driver "
                         f"writes (its check file {marker.name} is {'missing' if seen is None else 'different'}); "
                         f"mount the shared filesystem at the same path on every node")


def train_group_task(group: Group, marker: Path, token: str, devices: int | None = None) -> list[RunStatus]:
    """What one Ray task runs: :func:`~trainers.experiments.sweep.train_group` of ``group``, resuming (the driver
    handles ``overwrite`` once, so a retried task resumes rather than restarts), after checking with
    :func:`check_shared` that this node sees the driver's output directory. ``devices``: split the
    group's runs over this many of the worker's devices (None: all it sees)."""
    check_shared(marker, token)
    return train_group(group, overwrite=False, quiet=True, devices=devices)


def _is_es(group: Group) -> bool:
    return any(run.config.strategy == "es" for run in group.runs)


def run_sweep_on_ray(spec: SweepSpec, out_root: str | Path, *, address: str | None = None,
                     cpus_per_task: float = 1, gpus_per_task: float = 0, max_retries: int = 3,
                     part: tuple[int, int] | str = (1, 1), max_group: int | None = None,
                     split_combined: bool = True, overwrite: bool = False, quiet: bool = False,
                     devices: int | None = None) -> SweepResult:
    """Train part ``I/N`` of the grid ``spec`` under ``out_root`` with each group as one Ray task.

    ``address`` "HOST:PORT" connects to a running cluster (the driver disconnects at the end; the
    cluster keeps running); None starts a local cluster of this machine bound to 127.0.0.1 for the
    sweep and shuts it down at the end (also on an error or Ctrl-C). A process already connected to
    Ray (``ray.init`` by the caller) uses that connection. Each task reserves ``cpus_per_task`` CPUs and
    ``gpus_per_task`` GPUs; a task whose worker dies is retried up to ``max_retries`` times (resuming
    from checkpoints), a task that raises is not. ``out_root`` must be on a filesystem every node
    mounts at the same path. Returns the runs' statuses in the order of
    :func:`trainers.experiments.sweep.run_sweep` and the wall time in seconds (cluster start included). ``devices``:
    split each group's runs over this many of its worker's devices (None: all the worker sees).
    """
    started = time.perf_counter()
    cpus_per_task = check_number("cpus_per_task", cpus_per_task, 0, low_open=True)
    gpus_per_task = check_number("gpus_per_task", gpus_per_task, 0)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    groups = plan(spec, out_root, part=part, max_group=max_group, split_combined=split_combined)
    # workers may have another working directory: they get absolute paths
    tasks = [Group(group.key, tuple(run._replace(run_dir=run.run_dir.resolve()) for run in group.runs))
             for group in groups]
    if address is not None:
        check_reachable(address)
    ray = import_ray()
    if not tasks:                                          # an empty part: no cluster needed
        return SweepResult([], time.perf_counter() - started)
    if overwrite:
        _clear_runs(tasks)
    with _connected(ray, address, quiet):
        _check_resources(ray, cpus_per_task, gpus_per_task)
        # options at decoration: then Ray gives every GPU task a fresh worker process (max_calls=1), so
        # jax initialises on the GPU that Ray assigned to that task
        remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries,
                            retry_exceptions=False)(train_group_task)
        marker, token = _write_marker(Path(out_root).resolve())
        pending: dict[Any, int] = {}
        results: dict[int, list[RunStatus]] = {}
        bar = None
        try:
            # the costliest groups first (Group.cost: epochs x steps x states; es, whose epochs are the
            # longest, first among equals), so that with fewer workers than groups the long ones do not
            # start last
            for index in sorted(range(len(tasks)), key=lambda index: (-tasks[index].cost(), not _is_es(tasks[index]),
                                                                      index)):
                pending[remote.remote(tasks[index], marker, token, devices)] = index
            if not quiet:
                from tqdm.auto import tqdm
                done, finished = _progress(tasks)
                total = sum(run.config.epochs for group in tasks for run in group.runs)
                runs = sum(len(group.runs) for group in tasks)
                bar = tqdm(total=total, initial=done, unit="epoch", file=sys.stdout, dynamic_ncols=True,
                           desc=f"sweep on Ray: {len(tasks)} tasks")
                bar.set_postfix_str(f"runs {finished}/{runs} finished", refresh=True)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
                for reference in ready:
                    index = pending.pop(reference)
                    try:
                        results[index] = ray.get(reference)
                    except ray.exceptions.RayTaskError as error:
                        cause = getattr(error, "cause", None)
                        cause = cause if isinstance(cause, BaseException) else None
                        raise (cause or error) from None
                    except ray.exceptions.RayError as error:
                        first = tasks[index].runs[0].name
                        raise RuntimeError(f"the Ray task of the group of {first} failed after {max_retries} "
                                           f"retries ({type(error).__name__}); run the sweep again to resume "
                                           f"from the checkpoints") from None
                if bar is not None:
                    done, finished = _progress(tasks)
                    if done >= bar.n:
                        bar.update(done - bar.n)
                    else:                                # a retried task dropped rows after its checkpoint
                        bar.n = done
                    bar.set_postfix_str(f"runs {finished}/{runs} finished", refresh=True)
        finally:
            for reference in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(reference, force=True)
            if bar is not None:
                bar.close()
            marker.unlink(missing_ok=True)
    statuses: list[RunStatus] = []
    for index, group in enumerate(groups):                # the caller's paths (as given), in plan order
        by_name = {status.run.name: status for status in results[index]}
        statuses += [by_name[run.name]._replace(run=run) for run in group.runs]
    return SweepResult(statuses, time.perf_counter() - started)
