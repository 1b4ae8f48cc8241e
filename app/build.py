"""Build the default artifacts that are missing: train, export and index, one run at a time,
cheapest first, with the progress in ``<artifacts>/build/status.json``.

``python -m app`` starts this as a background worker process (``python -m app.build``) and
serves at once; each tab starts answering when its model is exported (the engine follows
the manifest). ``python -m app --build-only`` runs it in the foreground.

* **Order:** by the measured cost of each run (``<artifacts>/build/timings.json`` of an
  earlier build, else the run's reference time in its method's descriptor), cheapest first.
* **Per run:** ``python -m training METHOD --set run.name=RUN ...`` (with ``--resume`` when
  an interrupted checkpoint is there), then ``python -m export RUN`` and the method's
  post-export hooks, as subprocesses: the app itself imports nothing from ``training/``.
  Their output goes to the terminal and to ``<artifacts>/build/build.log``.
* **Up to date:** a run is built when it has no ``summary.json`` or its manifest entry was
  exported from another checkpoint (the checkpoint's sha256 recorded at export,
  :func:`exported`); files' times do not count, so a copied folder is served as it is.
* **Failures** are per run: a run whose training or export fails is marked failed with the
  last lines of its output; the others go on.
* **Stopping:** SIGINT/SIGTERM is passed on to the running training, which saves a
  resumable checkpoint; the next build resumes it and keeps every finished run.
* **One builder per folder:** a lock file (``<artifacts>/build/lock``, ``flock``) keeps two
  processes from training the same models; the second one says who holds it and serves.

The status file (written atomically): ``{"pid", "smoke", "started", "finished", "runs":
[{"run", "method", "state", "seconds_estimate", "started", "ended", "error"}]}`` with state
waiting / training / exporting / ready / failed / interrupted; :func:`read_status` adds each
training run's live ``progress.json`` (phase, epoch, step, time left).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from methods import SMOKE_COMMON, get_method, served_runs
from runtime.artifacts import Locked, hold_lock, write_json_atomic
from runtime.manifest import sha256_file

BUILD_DIR = "build"
SMOKE_SECONDS = 30.0      # a smoke run's estimate before one was measured
EXPORT_SECONDS = 15.0     # one run's export (+ hooks) estimate before one was measured
LOCKED_EXIT = 3           # the worker's exit status when another process holds the lock
# scripts/run.sh on a machine without the training stack: the pid of the install running
# behind the page (the build waits for it) and where that install writes its output
INSTALL_PID_VAR = "REPLENS_INSTALL_PID"
INSTALL_LOG = ".venv/install.log"
INSTALL_POLL_S = 2.0


class BuildError(RuntimeError):
    """A training or export step of the build failed (its output says why)."""

    user_error = True  # runtime.cli: one line, exit 2


class BuildLocked(RuntimeError):
    """Another process is building in the same artifacts folder."""

    user_error = True


@dataclass
class Item:
    """One run of the build plan."""
    run: str
    method: str
    overrides: list[str]
    seconds: float  # estimated training time


def smoke_overrides(method: str) -> list[str]:
    """Tiny budgets for the smoke build of ``method`` (pipeline checks, not useful models)."""
    return [*SMOKE_COMMON, *get_method(method).smoke]


def build_dir(artifacts: Path) -> Path:
    return Path(artifacts) / BUILD_DIR


def _timings(artifacts: Path) -> dict[str, Any]:
    try:
        return json.loads((build_dir(artifacts) / "timings.json").read_text())
    except (OSError, ValueError):
        return {}


def optional_runs() -> list[str]:
    """The runs the app builds only on request (``--only RUN``), e.g. the baselines."""
    return [r.run for _, r in served_runs() if r.optional]


def plan(artifacts: Path, smoke: bool = False, only: list[str] | None = None) -> list[Item]:
    """Every default run (or those in ``only``), cheapest first by measured cost; an
    optional run only when ``only`` names it or in the smoke build.

    Raises:
        ValueError: ``only`` names a run that is not a default run.
    """
    runs = {r.run: (d, r) for d, r in served_runs()}
    if only:
        unknown = [r for r in only if r not in runs]
        if unknown:
            raise ValueError(f"unknown run {unknown[0]!r}; the default runs are: "
                             + ", ".join(runs))
    measured = _timings(artifacts)
    items = []
    for name, (desc, run) in runs.items():
        if (only and name not in only) or (run.optional and not smoke and not only):
            continue
        key = f"{name}{' smoke' if smoke else ''}"
        est = measured.get(key, {}).get("train_s") or (SMOKE_SECONDS if smoke else run.seconds)
        over = [f"run.name={name}", *run.overrides, *(smoke_overrides(desc.name) if smoke else [])]
        items.append(Item(name, desc.name, over, float(est)))
    return sorted(items, key=lambda it: it.seconds)


def trained(artifacts: Path, run: str) -> bool:
    """True when ``runs/<run>/summary.json`` exists (written when training finishes)."""
    return (Path(artifacts) / "runs" / run / "summary.json").is_file()


def exported(artifacts: Path, run: str) -> bool:
    """True when the manifest has ``run`` and its entry was exported from the checkpoint on
    disk: the checkpoint's sha256 that export recorded (``training.checkpoint_sha256``)
    is the file's, whatever the files' times (a copied folder serves as it is). An entry
    without that record (written by an export that did not record it) falls back to the
    times: fresh unless the checkpoint is newer than the manifest. No checkpoint (a
    serving-only folder): fresh."""
    manifest, ckpt = Path(artifacts) / "manifest.json", Path(artifacts) / "runs" / run / "checkpoint.pt"
    try:
        entry = json.loads(manifest.read_text())["models"].get(run)
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    if not entry or not ckpt.is_file():
        return bool(entry)
    recorded = (entry.get("training") or {}).get("checkpoint_sha256")
    if recorded:
        return sha256_file(ckpt) == recorded
    return manifest.stat().st_mtime >= ckpt.stat().st_mtime


def pending(artifacts: Path, smoke: bool = False, only: list[str] | None = None) -> list[Item]:
    """The runs of the plan that still need training or export."""
    return [it for it in plan(artifacts, smoke, only)
            if not (trained(artifacts, it.run) and exported(artifacts, it.run))]


# --- the status file ---------------------------------------------------------------------
class Status:
    """``<artifacts>/build/status.json``, written by the one process that builds."""

    def __init__(self, artifacts: Path, items: list[Item], smoke: bool,
                 state: str = "waiting") -> None:
        self.path = build_dir(artifacts) / "status.json"
        self.data: dict[str, Any] = {
            "pid": os.getpid(), "smoke": smoke, "started": time.time(), "finished": None,
            "runs": [{"run": it.run, "method": it.method, "state": state,
                      "seconds_estimate": round(it.seconds + EXPORT_SECONDS, 1),
                      "started": None, "ended": None, "error": None} for it in items]}
        self.write()

    def set(self, run: str, **fields: Any) -> None:
        for r in self.data["runs"]:
            if r["run"] == run:
                r.update(fields)
        self.write()

    def finish(self) -> None:
        self.data["finished"] = time.time()
        self.write()

    def write(self) -> None:
        write_json_atomic(self.path, self.data)


def read_status(artifacts: Path) -> dict[str, Any] | None:
    """The build status with each training run's live progress (``progress``) and the time
    left for the whole queue (``eta_s``); None when no build ever ran here."""
    try:
        data = json.loads((build_dir(artifacts) / "status.json").read_text())
    except (OSError, ValueError):
        return None
    alive = data.get("finished") is None and _alive(data.get("pid"))
    data["running"] = alive
    eta = 0.0
    for r in data["runs"]:
        if r["state"] in ("training", "exporting") and not alive:
            r["state"] = "interrupted"  # the builder is gone (killed): resumed next start
        if r["state"] == "training":
            try:
                prog = json.loads((Path(artifacts) / "runs" / r["run"] / "progress.json").read_text())
                if prog.get("updated", 0) >= (r.get("started") or 0):
                    r["progress"] = prog
            except (OSError, ValueError):
                pass
        r["elapsed_s"] = round((r.get("ended") or time.time()) - r["started"], 1) \
            if r.get("started") else None
        if r["state"] in ("waiting", "installing"):
            eta += r["seconds_estimate"]
        elif r["state"] == "training":
            left = (r.get("progress") or {}).get("eta_s")
            eta += (left if left is not None else max(0.0, r["seconds_estimate"] - (r["elapsed_s"] or 0))) \
                + EXPORT_SECONDS
        elif r["state"] == "exporting":
            eta += EXPORT_SECONDS
    data["eta_s"] = round(eta, 1) if alive else None
    return data


def _alive(pid: Any) -> bool:
    """True when process ``pid`` runs (a zombie - killed, not yet reaped by the server that
    started it - counts as gone)."""
    try:
        return psutil.Process(int(pid)).status() not in (psutil.STATUS_ZOMBIE,
                                                          psutil.STATUS_DEAD)
    except (psutil.Error, TypeError, ValueError):
        return False


def _about(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s left"
    return f"about {seconds / 60:.0f} min left"


def describe_run(r: dict[str, Any]) -> str:
    """One line for a run of the status: "training qmil: epoch 2/4, step 80/160, about 40 s left"."""
    state, name = r["state"], r["run"]
    if state == "training":
        p = r.get("progress")
        if not p:
            return f"training {name}: starting"
        if p.get("phase") == "preparing":
            return f"training {name}: preparing data (generating faces or reading the data set)"
        bits = [f"epoch {p.get('epoch')}/{p.get('epochs')}", f"step {p.get('step')}/{p.get('total_steps')}"]
        if p.get("phase") == "evaluating":
            bits.append("evaluating")
        metrics = (p.get("last") or {}).get("metrics")
        if metrics:
            k, v = next(iter(metrics.items()))
            bits.append(f"last {k} {v:.3f}")
        left = _about(p.get("eta_s"))
        return f"training {name}: " + ", ".join(bits) + (f", {left}" if left else "")
    if state == "waiting":
        return f"{name}: waiting to be built (about {r['seconds_estimate'] / 60:.0f} min of work)" \
            if r["seconds_estimate"] >= 90 else f"{name}: waiting to be built"
    if state == "exporting":
        return f"exporting {name} to ONNX"
    if state == "installing":
        return (f"{name}: waiting for the training stack (torch) to finish installing "
                f"(log: {INSTALL_LOG})")
    if state == "failed":
        return f"{name}: the build FAILED: {r.get('error')}"
    if state == "interrupted":
        return f"{name}: its build was interrupted; the next `python -m app` resumes it"
    return f"{name}: ready"


def pending_message(artifacts: Path, run: str) -> str | None:
    """What a tab says while its model is being built, or None when it is not in the build."""
    st = read_status(artifacts)
    if not st:
        return None
    for r in st["runs"]:
        if r["run"] == run and r["state"] != "ready":
            line = describe_run(r)
            if r["state"] in ("failed", "interrupted"):
                return f"The model {run!r} is not available: {line}"
            return f"The model {run!r} is being built - {line}. This tab answers once it is exported (no restart needed)."
    return None


# --- building ---------------------------------------------------------------------------
@dataclass
class _Child:
    proc: subprocess.Popen | None = None
    stopping: bool = False  # a stop signal was passed on to ``proc``


_CHILD = _Child()


def _stream(cmd: list[str], log_path: Path, tail: int = 15) -> tuple[int, str]:
    """Run ``cmd``, passing its output to the terminal and the build log; returns (exit
    status, its last lines)."""
    last: collections.deque[str] = collections.deque(maxlen=tail)
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _CHILD.proc = proc
        pending_text = ""
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):  # type: ignore[union-attr]
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            log.write(chunk)
            pending_text += chunk.decode(errors="replace")
            *lines, pending_text = pending_text.replace("\r", "\n").split("\n")
            last.extend(ln for ln in lines if ln.strip())
        code = proc.wait()
        _CHILD.proc = None
    if pending_text.strip():
        last.append(pending_text)
    if _CHILD.stopping:  # stopped by a signal: the step has ended, so stop the build now
        raise KeyboardInterrupt
    return code, " | ".join(last)


def _error_line(tail: str) -> str:
    """The most telling line of a failed step's output."""
    lines = [ln.strip() for ln in tail.split(" | ") if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error:") or "Error" in ln:
            return ln[:400]
    return (lines[-1] if lines else "no output")[:400]


def _lock(artifacts: Path) -> Any:
    """The build lock of ``artifacts`` (held until the process ends).

    Raises:
        BuildLocked: another live process holds it.
    """
    d = build_dir(artifacts)
    try:
        return hold_lock(d / "lock", f"the build lock of {artifacts}",
                         f"that process is already building the models; this one does not train them "
                         f"too. Its progress is in {d / 'status.json'} (and on the Models tab).")
    except Locked as exc:
        raise BuildLocked(str(exc)) from None


def _record_timing(artifacts: Path, key: str, train_s: float, export_s: float) -> None:
    t = _timings(artifacts)
    t[key] = {"train_s": round(train_s, 1), "export_s": round(export_s, 1),
              "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(build_dir(artifacts) / "timings.json", t)


def _stop_child(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM: pass it on to the running step, whose output is still read to its
    end (the training says where it stopped and saves its checkpoint), then stop; with no
    step running (or on a second signal), stop at once."""
    child = _CHILD.proc
    if child is not None and child.poll() is None and not _CHILD.stopping:
        _CHILD.stopping = True
        child.send_signal(signal.SIGTERM)
        return
    raise KeyboardInterrupt


def ensure_artifacts(artifacts: Path, smoke: bool = False, only: list[str] | None = None,
                     options: list[str] | None = None) -> dict[str, Any]:
    """Build every pending run (cheapest first): train, export; returns the final status.

    Raises:
        BuildLocked: another process is building here.
        BuildError: some runs failed (the others were built).
        KeyboardInterrupt: stopped by a signal (the running training saved a checkpoint).
    """
    artifacts = Path(artifacts)
    todo = pending(artifacts, smoke, only)
    lock = _lock(artifacts)
    items = plan(artifacts, smoke, only)
    status = Status(artifacts, items, smoke)
    log_path = build_dir(artifacts) / "build.log"
    todo_names = {t.run for t in todo}
    for it in items:
        if it.run not in todo_names:
            status.set(it.run, state="ready")
    if todo:
        print(f"[build] {artifacts} lacks: {', '.join(t.run for t in todo)}; building them "
              f"now{' (smoke budgets)' if smoke else ''}, cheapest first. To serve only what "
              f"exists, run `python -m app --no-build`.", flush=True)
    _CHILD.stopping = False
    old = {s: signal.signal(s, _stop_child) for s in (signal.SIGINT, signal.SIGTERM)}
    failed: dict[str, str] = {}
    current = None
    try:
        for i, it in enumerate(todo, 1):
            current = it.run
            t0 = time.time()
            status.set(it.run, state="training", started=t0)
            if not trained(artifacts, it.run):
                cmd = [sys.executable, "-m", "training", it.method, "--artifacts", str(artifacts)]
                if (artifacts / "runs" / it.run / "checkpoint.pt").is_file():
                    cmd.append("--resume")  # an interrupted run: continue it
                for o in it.overrides:
                    cmd += ["--set", o]
                print(f"[build] training {it.run} ({i}/{len(todo)}): {' '.join(cmd)}", flush=True)
                code, tail = _stream(cmd, log_path)
                if code != 0 or not trained(artifacts, it.run):
                    failed[it.run] = f"training failed (exit {code}): {_error_line(tail)}"
                    status.set(it.run, state="failed", ended=time.time(), error=failed[it.run])
                    print(f"[build] {it.run}: {failed[it.run]}", flush=True)
                    continue
            t1 = time.time()
            status.set(it.run, state="exporting")
            cmd = [sys.executable, "-m", "export", it.run, "--artifacts", str(artifacts),
                   *(options or [])]
            if smoke:  # untrained models: an int8 speed/accuracy decision would mean nothing
                cmd += ["--gallery-limit", "1000", "--no-int8"]
            print(f"[build] exporting {it.run}: {' '.join(cmd)}", flush=True)
            code, tail = _stream(cmd, log_path)
            if code != 0:
                failed[it.run] = f"export failed (exit {code}): {_error_line(tail)}"
                status.set(it.run, state="failed", ended=time.time(), error=failed[it.run])
                print(f"[build] {it.run}: {failed[it.run]}", flush=True)
                continue
            t2 = time.time()
            _record_timing(artifacts, f"{it.run}{' smoke' if smoke else ''}", t1 - t0, t2 - t1)
            status.set(it.run, state="ready", ended=t2)
            print(f"[build] {it.run} ready in {t2 - t0:.0f} s", flush=True)
        current = None
    except KeyboardInterrupt:
        child = _CHILD.proc
        if child is not None and child.poll() is None:  # a second signal: stop it now
            child.kill()
        if current:
            status.set(current, state="interrupted", ended=time.time())
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        status.finish()
        lock.close()
    if failed:
        raise BuildError(f"{len(failed)} of {len(todo)} runs failed (the others were built): "
                         + "; ".join(f"{r}: {m}" for r, m in failed.items()))
    return status.data


def start_background(artifacts: Path, smoke: bool = False, only: list[str] | None = None
                     ) -> subprocess.Popen | None:
    """Start the build worker (``python -m app.build``) when something is pending."""
    if not pending(artifacts, smoke, only):
        return None
    cmd = [sys.executable, "-m", "app.build", "--artifacts", str(artifacts)]
    if smoke:
        cmd.append("--smoke")
    if only:
        cmd += ["--only", ",".join(only)]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)  # Ctrl-C reaches it through the server


def installing() -> int | None:
    """The pid of the training-stack install running behind the page (``scripts/run.sh``
    sets :data:`INSTALL_PID_VAR`), or None when there is none or it has ended."""
    pid = os.environ.get(INSTALL_PID_VAR, "").strip()
    return int(pid) if pid.isdigit() and _alive(pid) else None


def wait_for_install(artifacts: Path, smoke: bool = False, only: list[str] | None = None,
                     poll_s: float = INSTALL_POLL_S) -> bool:
    """Wait, with each pending run shown as ``installing`` on the page, until the install
    behind the page has ended; True when torch can then be imported (the build can start)."""
    import importlib
    import importlib.util

    pid = installing()
    if pid is None:
        return importlib.util.find_spec("torch") is not None
    todo = {t.run for t in pending(artifacts, smoke, only)}
    status = Status(artifacts, [it for it in plan(artifacts, smoke, only) if it.run in todo],
                    smoke, state="installing")
    print(f"[build] waiting for the training stack to install (pid {pid}, log: {INSTALL_LOG})",
          flush=True)
    while _alive(pid):
        time.sleep(poll_s)
    importlib.invalidate_caches()
    if importlib.util.find_spec("torch") is not None:
        return True
    error = f"installing the training stack failed: see {INSTALL_LOG}, then run bash scripts/setup.sh"
    for r in status.data["runs"]:
        if r["state"] == "installing":
            r.update(state="failed", error=error, ended=time.time())
    status.finish()
    print(f"[build] {error}", flush=True)
    return False


def iter_runs(text: str | None) -> list[str] | None:
    return [r.strip() for r in text.split(",") if r.strip()] if text else None


def main(argv: list[str] | None = None) -> int:
    from runtime.cli import Parser

    p = Parser(prog="python -m app.build", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--only", help="comma-separated default runs to build (default: all)")
    args = p.parse_args(argv)
    from runtime.artifacts import artifacts_dir

    artifacts, only = artifacts_dir(args.artifacts), iter_runs(args.only)
    if not wait_for_install(artifacts, smoke=args.smoke, only=only):
        return 1
    try:
        ensure_artifacts(artifacts, smoke=args.smoke, only=only)
    except BuildLocked as exc:
        print(f"[build] {exc}", flush=True)
        return LOCKED_EXIT
    except KeyboardInterrupt:
        print("[build] stopped; the interrupted training resumes on the next start", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    raise SystemExit(run_main(main))
