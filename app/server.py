"""Start the Gradio server (127.0.0.1 by default; auth when exposed), with the queue,
concurrency and upload limits of the serving settings (:mod:`app.settings`), the request
checks of :mod:`app.guard` (Host, Origin, login throttle, frame headers, answer-file
owners) and a private folder for uploads and answers (:func:`private_temp_dir`)."""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from app.settings import ServeSettings, configure, current as current_settings
from runtime.engine import Engine

log = logging.getLogger("replens.server")


def busy_message(settings: ServeSettings) -> str:
    return (f"RepLens is busy: {settings.queue_size} requests are already waiting (the "
            f"queue_size setting). Try again in a few seconds.")


NO_AUTH_WARNING = ("WARNING: serving on every network interface WITHOUT a login (--no-auth): "
                   "anyone who can reach this machine can use the app. Set "
                   "REPLENS_AUTH=user:password to require one.")


def auth_from_env() -> tuple[str, str] | None:
    """``REPLENS_AUTH=user:password`` -> (user, password); None when unset."""
    raw = os.environ.get("REPLENS_AUTH", "")
    if not raw:
        return None
    user, _, pw = raw.partition(":")
    if not user or not pw:
        raise ValueError("REPLENS_AUTH must look like user:password (both non-empty), e.g. "
                         "REPLENS_AUTH=analyst:s3cret")
    return user, pw


def serving_auth(expose: bool, no_auth: bool = False) -> tuple[str, str] | None:
    """The login of a server: REPLENS_AUTH when it is set (on 127.0.0.1 too: behind a
    reverse proxy on the same machine every visitor comes from 127.0.0.1); when exposed, it
    is required unless ``no_auth`` says so explicitly.

    Raises:
        ValueError: exposed without REPLENS_AUTH and without ``no_auth``; a bad REPLENS_AUTH.
    """
    auth = auth_from_env()
    if not expose:
        return auth
    if auth is None and not no_auth:
        raise ValueError("--expose listens on every network interface: set "
                         "REPLENS_AUTH=user:password to require a login, or pass --no-auth to "
                         "serve without one (anyone on the network could use the app)")
    return auth


def check_port_free(host: str, port: int) -> None:
    """ValueError naming --port when ``host:port`` cannot be bound (already in use)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ValueError(f"port {port} on {host} is in use ({exc.strerror}); another "
                             f"RepLens may be running. Choose a free port with --port N (or "
                             f"REPLENS_PORT=N)") from None


def _answer_busy_at_once(demo: Any, settings: ServeSettings) -> None:
    """A request beyond the queue is refused by Gradio at once (HTTP 503); this gives that
    answer RepLens' message. Gradio's own message stays if its queue API differs."""
    queue = getattr(demo, "_queue", None)
    push = getattr(queue, "push", None)
    if push is None:
        log.warning("this Gradio has no queue.push; a full queue answers with Gradio's message")
        return

    async def push_or_busy(*args: Any, **kwargs: Any):
        ok, message, kind = await push(*args, **kwargs)
        if kind == "queue_full":
            log.info("request refused: the queue is full (%d waiting)", settings.queue_size)
            message = busy_message(settings)
        return ok, message, kind

    queue.push = push_or_busy


def private_temp_dir() -> Path:
    """The folder of uploads and answer files, readable by this user only (0700).

    Without ``GRADIO_TEMP_DIR`` a new folder is made for this server (removed when it
    exits) and ``GRADIO_TEMP_DIR`` set to it, before Gradio reads it; a folder the user
    named is created 0700 when missing, and narrowed to 0700 when it is theirs and wider.
    """
    named = os.environ.get("GRADIO_TEMP_DIR")
    if not named:
        folder = Path(tempfile.mkdtemp(prefix="replens-gradio-"))  # 0700
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["GRADIO_TEMP_DIR"] = str(folder)
        return folder
    folder = Path(named)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_mode & 0o077:
        if st.st_uid == os.getuid():
            os.chmod(folder, 0o700)
            log.info("GRADIO_TEMP_DIR %s narrowed to 0700 (uploads and answers are private)",
                     folder)
        else:
            log.warning("GRADIO_TEMP_DIR %s belongs to another user and is readable by others "
                        "(mode %o): uploads and answers there are not private; unset it or name "
                        "a folder of your own", folder, stat.S_IMODE(st.st_mode))
    return folder


def bound_uploads(demo: Any, max_files: int) -> int:
    """Delete the oldest uploaded files beyond ``max_files`` (the ``answer_cache_answers``
    setting; Gradio's ``delete_cache`` deletes those older than ``answer_cache_age_s``);
    returns how many were deleted."""
    uploads = getattr(demo, "upload_file_set", None)
    if uploads is None or len(uploads) <= max_files:
        return 0
    dated = []
    for name in list(uploads):
        try:
            dated.append((os.stat(name).st_mtime, name))
        except OSError:
            uploads.discard(name)
    dated.sort()
    gone = dated[:max(0, len(dated) - max_files)]
    for _, name in gone:
        uploads.discard(name)
        with contextlib.suppress(OSError):
            os.unlink(name)
            os.rmdir(os.path.dirname(name))  # the upload's own folder, when now empty
    return len(gone)


def create_app(artifacts: Path, retinaface_weights: str | None = None,
               banner: str | None = None, settings: ServeSettings | None = None):
    """Build the Blocks app with its queue configured (also used by tests); ``settings``,
    when given, become the ones in force (:func:`app.settings.configure`), else those in
    force are used."""
    from app.faces import default_detector
    from app.ui import answer_store, build_ui

    engine = Engine(artifacts)
    for name in engine.names():  # create sessions now so the first request is fast
        try:
            engine.get(name)
        except Exception:  # noqa: BLE001 - shown per tab; others keep working
            pass
    from app.build import pending_message, read_status

    engine.pending = lambda name: pending_message(engine.artifacts, name)  # "training qmil: ..."
    s = configure(settings) if settings is not None else current_settings()
    store = answer_store()
    demo = build_ui(engine, lambda: default_detector(retinaface_weights, engine.artifacts),
                    banner=banner, outputs=store,
                    build_status=lambda: read_status(engine.artifacts))
    demo.queue(default_concurrency_limit=s.concurrency, max_size=s.queue_size)
    # uploads and the files Gradio writes go with the answers: same age, same count
    age = max(1, int(s.answer_cache_age_s))
    demo.delete_cache = (min(age, 60), age)
    store.after_prune = lambda: bound_uploads(demo, s.answer_cache_answers)
    _answer_busy_at_once(demo, s)
    return demo, engine


def stop_worker(worker: Any, timeout: float = 150) -> None:
    """Stop the build worker: SIGTERM (the running training saves a resumable checkpoint)."""
    import signal
    import subprocess

    if worker is None or worker.poll() is not None:
        return
    print("[app] stopping the build worker (the running training saves a checkpoint) ...", flush=True)
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()


def guard_policy(settings: ServeSettings, expose: bool) -> Any:
    """The request checks of a server (:class:`app.guard.Policy`) from its settings."""
    from app.guard import LoginThrottle, Policy
    from app.outputs import default_root

    return Policy(settings.allowed_hosts, settings.allowed_origins,
                  LoginThrottle(settings.login_max_failures, settings.login_window_s),
                  default_root(), machine=expose)


def guarded(policy: Any) -> Any:
    """A lifespan (``app_kwargs``) that puts :mod:`app.guard` in front of the app when the
    server starts, before it accepts a connection."""
    from app.guard import install

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        install(app, policy)
        yield

    return lifespan


def launch(artifacts: Path, port: int = 7860, expose: bool = False,
           retinaface_weights: str | None = None, t0: float | None = None, block: bool = True,
           no_auth: bool = False, worker: Any = None):
    """Serve (blocking unless ``block=False``); ``worker`` is the background build process,
    stopped with the server (Ctrl-C or SIGTERM)."""
    host = "0.0.0.0" if expose else "127.0.0.1"
    auth = serving_auth(expose, no_auth)
    check_port_free(host, port)
    private_temp_dir()
    banner = NO_AUTH_WARNING if expose and auth is None else None
    if banner:
        print(f"[app] {banner}", flush=True)
    settings = current_settings()
    demo, engine = create_app(artifacts, retinaface_weights, banner=banner, settings=settings)
    if not engine.names() and worker is None:
        print(f"[app] no models in {artifacts}: run `python -m app --artifacts {artifacts}` "
              f"without --no-build to build the defaults, or train and export your own "
              f"(`python -m training METHOD`, `python -m export --all`)", flush=True)
    elif worker is not None:
        print(f"[app] building the missing models in the background (pid {worker.pid}); each "
              f"tab answers once its model is exported; progress on the page", flush=True)
    for name, st in engine.status().items():
        print(f"[app] {name}: {st.get('status')} {st.get('provider', st.get('error', ''))}")
    demo.launch(server_name=host, server_port=port, auth=auth, show_error=False,
                prevent_thread_lock=True, quiet=True, max_file_size=settings.max_upload_bytes,
                app_kwargs={"lifespan": guarded(guard_policy(settings, expose))})
    from app.guard import Guard

    if not isinstance(getattr(demo.app, "middleware_stack", None), Guard):  # fail closed
        demo.close()
        raise RuntimeError("the request checks of app/guard.py were not installed (the "
                           "server's lifespan did not run); not serving without them")
    url = f"http://{host}:{port}/"
    took = f" (ready in {time.time() - t0:.1f} s)" if t0 else ""
    print(f"[app] RepLens running at {url}{took}. Press Ctrl+C to stop.", flush=True)
    if not block:
        return demo
    import signal

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop_worker(worker)
        demo.close()
    return 0
