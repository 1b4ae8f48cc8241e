"""The Ray engine: batch analysis and gallery builds spread over a Ray cluster.

``python -m app.cli face|classify|neighbours PATH... --out results.parquet --engine ray``
runs the same per-file analysis as the local engine (:mod:`app.batch`), as a Ray Data
pipeline: the files listed here are read and hashed by CPU tasks, and each file is then
analysed by a pool of ``--workers`` actors, each holding the command's own models (one
onnxruntime session per model per actor; one GPU per actor when the cluster has GPUs).
An actor builds its analysis by running the command's own code (:func:`capture_analysis`),
so both engines call the same per-file function and give the same rows. The rows come back
in the order files finish and are written by the local engine's writer, so ``--resume``,
the ``error`` rows and the summary are the same.

``python -m export.methods.dcl.gallery --folder DIR --engine ray`` embeds the gallery's missing
shards on a pool of encoder actors (:func:`gallery_shards`); the shards, the index and the
gallery are written here, as the local build writes them.

Ray is optional (``pip install -r requirements-ray.txt``); this module imports it only when
asked to run, and says how to install it when it is missing. The inputs, the artifacts
folder and the results are read and written under the same paths on every machine (shared
storage, see docs/scale.md).
"""
from __future__ import annotations

import argparse
import contextvars
import copy
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

from runtime.cli import UserError

RAY_MISSING = "Ray is not installed: pip install -r requirements-ray.txt"
LOCAL, RAY = "local", "ray"  # --engine: this process (the default), or a Ray cluster
BLOCK_FILES = 4   # files per block (a read task, then one actor call; rows come per block)
BLOCKS_PER_WORKER = 4  # and at least this many blocks per actor, so that every actor has work
ENV_PREFIX = "REPLENS_"  # the settings the workers get from this process's environment

# set while a worker runs the command to get its per-file function (see capture_analysis)
_CAPTURE: contextvars.ContextVar[list[tuple[Any, list[str]]] | None] = contextvars.ContextVar(
    "ray_capture", default=None)


def add_engine_args(parser: argparse.ArgumentParser, what: str) -> None:
    """``--engine``, ``--address`` and ``--workers`` on a command (``what``: where the
    work runs, in words: "a batch is analysed")."""
    parser.add_argument("--engine", choices=(LOCAL, RAY), default=LOCAL,
                        help=f"where {what}: this process (local) or a Ray cluster (ray; "
                             f"pip install -r requirements-ray.txt)")
    parser.add_argument("--address", help="--engine ray: the cluster (auto: the one started "
                                          "on this machine; default: a Ray of this machine)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="--engine ray: model workers (default: one per GPU of the "
                             "cluster, else one per CPU)")


def wants_ray(args: argparse.Namespace) -> bool:
    """``--engine ray``; ``--address`` or ``--workers`` without it are refused.

    Raises:
        UserError: ``--address`` or ``--workers`` with the local engine.
    """
    if getattr(args, "engine", LOCAL) == RAY:
        return True
    given = [f for f in ("address", "workers") if getattr(args, f, None) is not None]
    if given:
        raise UserError(f"--{given[0]} goes with --engine ray (the local engine runs in this "
                        f"process): add --engine ray or leave --{given[0]} out")
    return False


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        UserError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
        import ray.data  # noqa: F401 - the pipeline's API
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "ray":
            raise UserError(RAY_MISSING) from None
        raise
    return ray


def connect(address: str | None) -> Any:
    """Ray, connected to ``address`` (``auto``, ``HOST:PORT``), or to a Ray started for
    this process when None; a connection made earlier in this process is kept.

    Raises:
        UserError: Ray is missing, or the cluster cannot be reached.
    """
    ray = import_ray()
    quiet(ray)
    if ray.is_initialized():
        return ray
    import logging

    reachable(address)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPU: nothing to hide
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address is None:
            raise UserError(f"--engine ray: Ray cannot start on this machine ({exc}); start a "
                            f"cluster (docs/scale.md) and name it with --address") from None
        raise UserError(f"--address {address}: cannot reach the Ray cluster ({exc}); start it "
                        f"with `ray start --head` (docs/scale.md) or leave --address out") from None
    return ray


def reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` address answers a TCP connection (Ray itself waits minutes for a
    cluster that is not there).

    Raises:
        UserError: nothing listens there.
    """
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: give the head's HOST:PORT (e.g. 10.0.0.1:6379) "
                        f"or auto")
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there "
                        f"({exc.strerror or exc}); start it with `ray start --head` "
                        f"(docs/scale.md) or leave --address out") from None


def quiet(ray: Any) -> None:
    """Ray Data's own progress bars and notices off: the batch shows one bar of files (the
    Ray dashboard shows the cluster's work)."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def check_workers(requested: int | None) -> None:
    """``--workers``, checked before Ray starts.

    Raises:
        UserError: below 1.
    """
    if requested is not None and requested < 1:
        raise UserError(f"--workers must be at least 1, got {requested}")


def workers(requested: int | None, ray: Any) -> tuple[int, float]:
    """(actors, GPUs per actor): ``--workers`` or one per GPU of the cluster, else one per
    CPU; one GPU per actor when the cluster has GPUs."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    default = gpus or max(1, int(res.get("CPU", 1)))
    return (requested or default), (1.0 if gpus else 0.0)


# --- batch analysis -------------------------------------------------------------------------
def captured(analyse: Any, columns: list[str]) -> bool:
    """Called by :func:`app.batch.cli_batch`: inside :func:`capture_analysis`, keep the
    command's per-file function and columns (True: the command stops there)."""
    box = _CAPTURE.get()
    if box is None:
        return False
    box.append((analyse, columns))
    return True


def capture_analysis(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """The per-file function and columns of the batch command ``args``, built by the
    command's own code (:func:`app.cli.run`) in this process: its engine, models and face
    detector are this process's own."""
    from app.cli import run

    token = _CAPTURE.set([])
    try:
        run(args)
        got = _CAPTURE.get()
    finally:
        _CAPTURE.reset(token)
    if not got:
        raise RuntimeError(f"the command {args.cmd!r} ran no batch analysis")
    return got[0]


def worker_args(args: argparse.Namespace) -> argparse.Namespace:
    """The command as a worker runs it: the artifacts folder as an absolute path."""
    from runtime.cli import artifacts_folder

    out = copy.copy(args)
    out.artifacts = str(artifacts_folder(args.artifacts, must_exist=True).resolve())
    return out


def read_files(batch: dict[str, Any]) -> dict[str, Any]:
    """A read task: each file's sha256 (None when it cannot be read: the analysis then
    reports the error as the local engine does)."""
    from runtime.manifest import sha256_file

    files = [str(f) for f in batch["file"]]
    digests = []
    for f in files:
        try:
            digests.append(sha256_file(Path(f)))
        except OSError:
            digests.append(None)
    return {"file": files, "sha256": digests}


def failure(exc: BaseException) -> tuple[str, str]:
    """What stops a worker, as sent back to the command: ``(kind, message)``."""
    from runtime.cli import is_user_error
    from runtime.engine import ModelUnavailableError

    if isinstance(exc, ModelUnavailableError):
        return "unavailable", str(exc)
    if is_user_error(exc):
        return "refused", str(exc)
    return "crashed", f"{type(exc).__name__}: {exc}"


def raise_failure(kind: str, message: str) -> None:
    """The command's side of :func:`failure`: the batch stops with the worker's message."""
    from runtime.engine import ModelUnavailableError

    if kind == "unavailable":
        raise ModelUnavailableError(message)
    if kind == "refused":
        raise UserError(f"a Ray worker: {message}")
    raise RuntimeError(f"a Ray worker failed: {message}")


class Analyser:
    """A model actor: the command's analysis built once, then applied file by file. A
    worker that cannot build it (its machine lacks the models) answers every file with
    the reason, which stops the batch (an actor that raised would be restarted forever)."""

    def __init__(self, args: argparse.Namespace, cwd: str) -> None:
        if os.path.isdir(cwd):  # relative inputs name the same files as on the driver
            os.chdir(cwd)
        from app.inputs import cli_requests

        self.failed: tuple[str, str] | None = None
        try:
            with cli_requests():
                self.analyse, self.columns = capture_analysis(args)
        except Exception as exc:  # noqa: BLE001 - sent to the command, which stops
            self.failed = failure(exc)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from app.batch import _rows_for
        from app.inputs import cli_requests
        from runtime.engine import ModelUnavailableError

        files, out = [str(f) for f in batch["file"]], []
        for f, digest in zip(files, batch["sha256"]):
            result: Any = self.failed
            if result is None:
                try:
                    with cli_requests():  # messages name the CLI's flags, as locally
                        result = ("rows", _rows_for(Path(f), self.analyse, self.columns,
                                                    digest or None))
                except ModelUnavailableError as exc:
                    result = failure(exc)
            out.append(pickle.dumps(result))
        return {"file": files, "result": out}


def rows_source(args: argparse.Namespace) -> Any:
    """The Ray engine as :data:`app.batch.RowsSource` for the batch command ``args``.

    Raises:
        UserError: Ray is missing, ``--workers`` is below 1, or the cluster is unreachable.
    """
    check_workers(args.workers)
    wargs = worker_args(args)
    ray = connect(args.address)  # before the results file is touched
    n, gpus = workers(args.workers, ray)

    def source(paths: list[Path]) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
        if not paths:
            return
        blocks = min(len(paths), max(-(-len(paths) // BLOCK_FILES), BLOCKS_PER_WORKER * n))
        ds = ray.data.from_items([{"file": str(p)} for p in paths], override_num_blocks=blocks)
        # reading is light: its tasks (as many at a time as actors) take no CPU slot, so they
        # run beside the model actors
        ds = ds.map_batches(read_files, batch_size=None, batch_format="numpy", num_cpus=0,
                            compute=ray.data.TaskPoolStrategy(size=n))
        ds = ds.map_batches(Analyser, fn_constructor_kwargs={"args": wargs, "cwd": os.getcwd()},
                            batch_size=1, batch_format="numpy", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(size=n),
                            **({"num_gpus": gpus} if gpus else {}))
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for f, blob in zip(batch["file"], batch["result"]):
                kind, value = pickle.loads(blob)
                if kind != "rows":
                    raise_failure(kind, value)
                yield Path(str(f)), value

    return source


# --- gallery builds -------------------------------------------------------------------------
class ShardEmbedder:
    """An encoder actor: the DCL encoder loaded once, then shards embedded one by one (or,
    as :class:`Analyser`, the reason it cannot be loaded)."""

    def __init__(self, name: str, entry: dict[str, Any], artifacts: str) -> None:
        from runtime.engine import OnnxModel

        self.failed: tuple[str, str] | None = None
        try:
            self.model = OnnxModel(name, entry, Path(artifacts))
        except Exception as exc:  # noqa: BLE001 - sent to the command, which stops
            self.failed = failure(exc)

    def embed(self, images: list[Any]) -> Any:
        return self.model.run({"image": self.model.prepare(images)})["embedding"]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = []
        for blob in batch["shard"]:
            job, k, files = pickle.loads(blob)
            try:
                result: Any = self.failed or ("shard", (k, job.embed(files, self.embed)))
            except Exception as exc:  # noqa: BLE001 - a bad encoder output stops the build
                result = failure(exc)
            out.append(pickle.dumps(result))
        return {"shard": out}


def gallery_shards(address: str | None, requested: int | None) -> Any:
    """The Ray engine for :func:`runtime.gallery_build.build_from_folder`: a factory that,
    given the encoder (:class:`runtime.engine.OnnxModel`), returns its shard map.

    Raises:
        UserError: Ray is missing, ``--workers`` is below 1, or the cluster is unreachable.
    """
    check_workers(requested)
    ray = connect(address)  # before the build starts
    n, gpus = workers(requested, ray)

    def for_encoder(model: Any) -> Any:
        def shard_map(job: Any, todo: list[tuple[int, list[str]]]) -> Iterator[tuple[int, Any]]:
            if not todo:
                return
            ds = ray.data.from_items([{"shard": pickle.dumps((job, k, files))}
                                      for k, files in todo], override_num_blocks=len(todo))
            ds = ds.map_batches(ShardEmbedder, fn_constructor_kwargs={
                "name": model.name, "entry": model.entry, "artifacts": str(model.artifacts)},
                batch_size=1, batch_format="numpy", num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=min(n, len(todo))),
                **({"num_gpus": gpus} if gpus else {}))
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for blob in batch["shard"]:
                    kind, value = pickle.loads(blob)
                    if kind != "shard":
                        raise_failure(kind, value)
                    yield value

        return shard_map

    return for_encoder
