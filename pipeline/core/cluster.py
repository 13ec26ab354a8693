"""A dask client: of the cluster at an address, or of a local cluster that lives as long as the block.
"""
from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

from pipeline.core.errors import PipeError

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT = "30s"  # how long to try reaching a --scheduler address


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, loader_workers: int | None = None,
                ) -> Iterator["Client"]:
    """A client of the cluster at `scheduler`, or of a local cluster of `workers` processes (one
    thread each) that lives as long as the block. `loader_workers` > 0 makes the local workers
    non-daemonic, so that each may start its own DataLoader processes."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler and workers:
        raise PipeError("give --dask-workers (a local cluster) or --scheduler (an existing one), not both")
    if scheduler:
        _check_host(scheduler)
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise PipeError(f"cannot reach the dask scheduler at {scheduler}: {type(e).__name__}: {e}") from None
        with client:
            yield client
        return
    if not workers or workers < 1:
        raise PipeError(f"--dask-workers must be at least 1, got {workers}")
    with dask.config.set({"distributed.worker.daemon": not loader_workers}):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client


def _check_host(address: str) -> None:
    """A host name that does not resolve fails now, not after the connect timeout."""
    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname
    if host:
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError) as e:
            raise PipeError(f"cannot reach the dask scheduler at {address}: unknown host {host!r} ({e})") from None
