"""Start the Gradio server (127.0.0.1 by default; auth when exposed)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from runtime.engine import Engine


def auth_from_env() -> tuple[str, str] | None:
    """``REPLENS_AUTH=user:password`` -> (user, password); None when unset."""
    raw = os.environ.get("REPLENS_AUTH", "")
    if not raw:
        return None
    if ":" not in raw:
        raise ValueError("REPLENS_AUTH must look like user:password")
    user, pw = raw.split(":", 1)
    return user, pw


def create_app(artifacts: Path, retinaface_weights: str | None = None, concurrency: int = 2):
    """Build the Blocks app with its queue configured (also used by tests)."""
    from app.faces import default_detector
    from app.ui import build_ui

    engine = Engine(artifacts)
    for name in engine.names():  # create sessions now so the first request is fast
        try:
            engine.get(name)
        except Exception:  # noqa: BLE001 - shown per tab; others keep working
            pass
    demo = build_ui(engine, lambda: default_detector(retinaface_weights))
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    return demo, engine


def launch(artifacts: Path, port: int = 7860, expose: bool = False,
           retinaface_weights: str | None = None, concurrency: int = 2,
           t0: float | None = None, block: bool = True):
    demo, engine = create_app(artifacts, retinaface_weights, concurrency)
    host = "0.0.0.0" if expose else "127.0.0.1"
    auth = auth_from_env() if expose else None
    for name, st in engine.status().items():
        print(f"[app] {name}: {st.get('status')} {st.get('provider', st.get('error', ''))}")
    demo.launch(server_name=host, server_port=port, auth=auth, show_error=False,
                prevent_thread_lock=True, quiet=True, max_file_size="25mb")
    url = f"http://{host}:{port}/"
    took = f" (ready in {time.time() - t0:.1f} s)" if t0 else ""
    print(f"[app] RepLens running at {url}{took}. Press Ctrl+C to stop.", flush=True)
    if not block:
        return demo
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        demo.close()
    return 0
