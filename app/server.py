"""Start the Gradio server (127.0.0.1 by default; auth when exposed), with the queue,
concurrency and upload limits of the serving settings (:mod:`app.settings`)."""
from __future__ import annotations

import logging
import os
import socket
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
    """The login of a server: none on 127.0.0.1; when exposed, REPLENS_AUTH, or nothing only
    when ``no_auth`` says so explicitly.

    Raises:
        ValueError: exposed without REPLENS_AUTH and without ``no_auth``; a bad REPLENS_AUTH.
    """
    if not expose:
        return None
    auth = auth_from_env()
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


def create_app(artifacts: Path, retinaface_weights: str | None = None,
               banner: str | None = None, settings: ServeSettings | None = None):
    """Build the Blocks app with its queue configured (also used by tests); ``settings``,
    when given, become the ones in force (:func:`app.settings.configure`), else those in
    force are used."""
    from app.faces import default_detector
    from app.ui import build_ui

    engine = Engine(artifacts)
    for name in engine.names():  # create sessions now so the first request is fast
        try:
            engine.get(name)
        except Exception:  # noqa: BLE001 - shown per tab; others keep working
            pass
    from app.build import pending_message, read_status

    engine.pending = lambda name: pending_message(engine.artifacts, name)  # "training qmil: ..."
    s = configure(settings) if settings is not None else current_settings()
    demo = build_ui(engine, lambda: default_detector(retinaface_weights, engine.artifacts),
                    banner=banner,
                    build_status=lambda: read_status(engine.artifacts))
    demo.queue(default_concurrency_limit=s.concurrency, max_size=s.queue_size)
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


def launch(artifacts: Path, port: int = 7860, expose: bool = False,
           retinaface_weights: str | None = None, t0: float | None = None, block: bool = True,
           no_auth: bool = False, worker: Any = None):
    """Serve (blocking unless ``block=False``); ``worker`` is the background build process,
    stopped with the server (Ctrl-C or SIGTERM)."""
    host = "0.0.0.0" if expose else "127.0.0.1"
    auth = serving_auth(expose, no_auth)
    check_port_free(host, port)
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
                prevent_thread_lock=True, quiet=True, max_file_size=settings.max_upload_bytes)
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
