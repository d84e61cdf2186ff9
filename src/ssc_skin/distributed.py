"""Fan-out of independent per-item work (images, slides) in process or on Dask `distributed`.

`map_ordered(fn, items, engine)` yields `fn(item)` in input order, either in this process
(`engine.kind: sequential`, the default) or on a Dask cluster (`kind: dask`): a
`LocalCluster` of worker processes started for the call, or a running scheduler
(`scheduler: tcp://host:8786`). At most `max_in_flight` items are submitted ahead of the one
the caller is waiting for, so memory stays flat however many items there are; results that
finish early wait in that window until their turn.

What crosses to a worker must pickle, and is sent by value: `fn` is a plain top-level
function (imported by name on the worker) and its arguments are plain values, arrays and
bytes. Kedro-mlflow's datasets cannot be pickled (kedro-mlflow issues #624, #646) and a
TensorFlow or TFLite model must not be: models travel as TFLite flatbuffer bytes and each
worker process builds its interpreter once (`worker_cached`). MLflow logging stays in the
driver. No Kedro here.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

SEQUENTIAL, DASK = "sequential", "dask"
KINDS = (SEQUENTIAL, DASK)
SCHEDULER_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class EngineConfig:
    """`engine:` in conf/base/parameters_engine.yml."""

    kind: str = SEQUENTIAL
    scheduler: str | None = None  # None: a LocalCluster for the call
    n_workers: int = 2  # LocalCluster only
    threads_per_worker: int = 1  # LocalCluster only; also each worker's TFLite threads
    max_in_flight: int | None = None  # None: 2 per worker thread
    progress_seconds: float = 10.0  # a progress line at least this often (and every 10%)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> EngineConfig:
        """Every bad key named in one message (`engine.<key>`), before any work starts."""
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        problems = [
            f"engine.{key} is not a setting (known: {', '.join(sorted(known))})"
            for key in params
            if key not in known
        ]
        config = cls(**{k: v for k, v in params.items() if k in known})
        if config.kind not in KINDS:
            problems.append(f"engine.kind must be one of {', '.join(KINDS)}; got {config.kind!r}")
        if config.scheduler is not None and (
            not isinstance(config.scheduler, str)
            or not config.scheduler.startswith(SCHEDULER_SCHEMES)
        ):
            problems.append(
                "engine.scheduler must be null (a LocalCluster) or an address "
                f"such as tcp://host:8786; got {config.scheduler!r}"
            )
        for name in ("n_workers", "threads_per_worker"):
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"engine.{name} must be a whole number >= 1; got {value!r}")
        window = config.max_in_flight
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            problems.append(f"engine.max_in_flight must be null or >= 1; got {window!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return config

    def window(self, cluster_threads: int | None = None) -> int:
        """How many items may be submitted and not yet yielded: enough to keep every worker
        thread busy while one result is late, few enough to bound memory."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        return 2 * max(1, cluster_threads or self.n_workers * self.threads_per_worker)

    def describe(self) -> str:
        if self.kind == SEQUENTIAL:
            return "sequential"
        if self.scheduler:
            return "dask (scheduler given)"  # the address itself stays out of logs
        return f"dask LocalCluster ({self.n_workers} x {self.threads_per_worker} thread(s))"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_engine(engine: EngineConfig | Mapping[str, Any] | None) -> EngineConfig:
    return engine if isinstance(engine, EngineConfig) else EngineConfig.from_dict(engine)


def map_ordered(
    fn: Callable[..., R],
    items: Iterable[T],
    engine: EngineConfig | Mapping[str, Any] | None = None,
    *,
    shared: Any = None,
    total: int | None = None,
    label: str = "items",
) -> Iterator[R]:
    """`fn(item)` (or `fn(item, shared)`) for every item, yielded in input order.

    `shared` is sent to each worker once (scattered), not once per item: use it for model
    bytes and configuration. Items are read lazily from `items`, at most the window ahead.
    An exception in `fn` is raised here when its item's turn comes, after the results before
    it; the cluster of a dask run is shut down when the iterator ends, fails or is closed.
    The engine is checked now, not at the first `next()`.
    """
    config = as_engine(engine)
    progress = _Progress(label, total, config)
    if config.kind == SEQUENTIAL:
        return _sequential(fn, items, shared, progress)
    _check_picklable(fn, shared)
    return _on_dask(fn, items, shared, config, progress)


def _sequential(
    fn: Callable[..., R], items: Iterable[T], shared: Any, progress: _Progress
) -> Iterator[R]:
    for item in items:
        result = fn(item) if shared is None else fn(item, shared)
        progress.step()
        yield result
    progress.finish()


def _on_dask(
    fn: Callable[..., R], items: Iterable[T], shared: Any, config: EngineConfig, progress: _Progress
) -> Iterator[R]:
    from distributed import as_completed  # noqa: PLC0415 - optional extra `dask`

    with dask_client(config) as client:
        threads = sum(client.nthreads().values())
        window = config.window(threads)
        logger.info(
            "Fan-out of %s on %s: %d worker thread(s), at most %d in flight",
            progress.label,
            config.describe(),
            threads,
            window,
        )
        extra = ()
        if shared is not None:  # a list of one: a dict would be scattered key by key
            extra = tuple(client.scatter([shared], broadcast=True, hash=False))
        source, exhausted = iter(items), False
        pending, index_of, ready = as_completed(), {}, {}
        submitted = yielded = 0
        try:
            while True:
                while not exhausted and submitted - yielded < window:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    future = client.submit(fn, item, *extra, pure=False)
                    index_of[future.key] = submitted
                    pending.add(future)
                    submitted += 1
                if yielded == submitted:
                    break
                while yielded not in ready:  # re-order: keep early finishers for their turn
                    future = next(pending)
                    ready[index_of.pop(future.key)] = future
                future = ready.pop(yielded)
                result = future.result()  # re-raises the item's exception, in order
                future.release()
                yielded += 1
                progress.step()
                yield result
            progress.finish()
        finally:
            leftover = list(ready.values()) + list(pending.futures)
            if leftover:
                client.cancel(leftover)


@contextmanager
def dask_client(config: EngineConfig) -> Iterator[Any]:
    """A client of the configured scheduler, or of a LocalCluster of worker processes that
    lives as long as the block (on 127.0.0.1, no dashboard)."""
    try:
        from distributed import Client, LocalCluster  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(
            "engine.kind: dask needs Dask's `distributed`: pip install "
            "'ssc_skin[dask]' (or set engine.kind: sequential)"
        ) from error
    if config.scheduler:
        client = Client(config.scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=config.n_workers,
        threads_per_worker=config.threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        # its health/metrics HTTP server: this machine only, any free port
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.WARNING,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _check_picklable(fn: Callable[..., Any], shared: Any) -> None:
    """Fail before a cluster starts, with the reason, rather than deep inside Dask."""
    name = getattr(fn, "__qualname__", repr(fn))
    if "<lambda>" in name or "<locals>" in name or not getattr(fn, "__module__", None):
        raise TypeError(
            f"engine.kind: dask needs a top-level function, got {name}: workers "
            "import it by name (a closure could carry datasets along)"
        )
    try:
        pickle.dumps(shared)
    except Exception as error:  # pickling errors have no common base class
        raise TypeError(
            "engine.kind: dask: the arguments sent to workers cannot be pickled "
            f"({type(error).__name__}: {error}); send bytes and plain values, "
            "keep Kedro/MLflow datasets and live models in the driver"
        ) from error


class _Progress:
    """Items/s in the log: every 10% of a known total, and at least every few seconds."""

    def __init__(self, label: str, total: int | None, config: EngineConfig) -> None:
        self.label, self.total, self.engine = label, total, config.describe()
        self.every = max(1, total // 10) if total else None
        self.seconds = config.progress_seconds
        self.done = self.logged = 0
        self.start = self.last = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if (self.every and self.done % self.every == 0) or now - self.last >= self.seconds:
            self._log(now)

    def finish(self) -> None:
        if self.logged != self.done:  # unless the last step already said it
            self._log(time.perf_counter())

    def _log(self, now: float) -> None:
        self.last, self.logged = now, self.done
        of = f"/{self.total}" if self.total is not None else ""
        logger.info(
            "%s: %d%s (%.2f %s/s, %s)",
            self.label.capitalize(),
            self.done,
            of,
            self.done / max(now - self.start, 1e-9),
            self.label,
            self.engine,
        )


# --- per-worker cache: a model built once per worker process, not once per item -------------

_CACHE: OrderedDict[str, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 4  # a long-lived worker of a real cluster keeps a few runs' models, not all


def digest(*parts: bytes | str) -> str:
    """A short key for model bytes and configuration; computed once, in the driver."""
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()


def worker_cached(key: str, build: Callable[[], T]) -> T:
    """`build()` once per process and key (an interpreter from TFLite bytes, a preprocessor).

    On a worker this is what keeps models from being pickled: only their bytes travel, once.
    """
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        value = build()
        _CACHE[key] = value
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return value
