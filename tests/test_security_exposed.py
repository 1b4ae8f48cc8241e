"""The served app under attack: each request below is one that a server without the checks
of app/guard.py answers; here each must be refused (or answered without what it asks for).

One exposed server (``--expose`` with ``REPLENS_AUTH``) on the smoke artifacts serves the
request tests (slow: a server starts); a second, on 127.0.0.1 without models, checks the Host
header there too. The throttle's window and the host and origin rules are also checked
directly (fast)."""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import stat
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

USER, PASSWORD = "analyst", "s3cret-pw"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exposed(smoke_artifacts):
    """(base URL, demo) of ``python -m app --expose`` with a login, in a private temp dir."""
    from app.server import launch

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPLENS_AUTH", f"{USER}:{PASSWORD}")
        mp.setenv("GRADIO_TEMP_DIR", "")  # unset: the server makes its own private folder
        port = _port()
        demo = launch(smoke_artifacts, port=port, expose=True, block=False)
        try:
            yield f"http://127.0.0.1:{port}", demo
        finally:
            demo.close()


def _login(base: str, client_ip: str | None = None) -> httpx.Client:
    """A logged-in HTTP session (its own cookie: one login)."""
    c = httpx.Client(base_url=base, timeout=30)
    headers = {"X-Forwarded-For": client_ip} if client_ip else {}
    r = c.post("/login", data={"username": USER, "password": PASSWORD}, headers=headers)
    assert r.status_code == 200, r.text
    return c


def _classify(c: httpx.Client) -> dict:
    """Upload a picture and classify it through the HTTP API; the answer's JSON file."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(
        buf, format="PNG")
    up = c.post("/gradio_api/upload", files={"files": ("x.png", buf.getvalue(), "image/png")})
    assert up.status_code == 200, up.text
    image = {"path": up.json()[0], "meta": {"_type": "gradio.FileData"}}
    ev = c.post("/gradio_api/call/classify", json={"data": [image, "", "", "none"]})
    assert ev.status_code == 200, ev.text
    stream = c.get(f"/gradio_api/call/classify/{ev.json()['event_id']}").text
    data = json.loads(stream.split("event: complete\ndata: ", 1)[1].split("\n", 1)[0])
    return {"upload": up.json()[0], "file": data[4]}


@pytest.mark.slow
def test_repeated_wrong_logins_are_throttled_and_logged(exposed, caplog):
    base, _ = exposed
    caplog.set_level(logging.WARNING, logger="replens.security")
    attacker = {"X-Forwarded-For": "203.0.113.7"}  # the proxy's word for the client (uvicorn)
    with httpx.Client(base_url=base, timeout=30) as c:
        codes = [c.post("/login", data={"username": USER, "password": f"guess{i}"},
                        headers=attacker).status_code for i in range(6)]
        assert codes[:5] == [400] * 5 and codes[5] == 429, codes
        right = c.post("/login", data={"username": USER, "password": PASSWORD}, headers=attacker)
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
        # another client is not locked out by the attacker
        assert c.post("/login", data={"username": USER, "password": PASSWORD},
                      headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    failures = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("failed login")]
    assert len(failures) == 5 and all("203.0.113.7" in m for m in failures)
    assert any("login refused from 203.0.113.7" in r.getMessage() for r in caplog.records)
    assert not any("guess" in r.getMessage() or PASSWORD in r.getMessage()
                   for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/", "/config", "/gradio_api/info"])
def test_a_foreign_host_header_is_refused(exposed, path):
    base, _ = exposed
    r = httpx.get(base + path, headers={"Host": "attacker.example"}, timeout=30)
    assert r.status_code == 400 and "allowed_hosts" in r.text


@pytest.mark.slow
def test_a_foreign_origin_gets_no_cors_and_cannot_post(exposed):
    base, _ = exposed
    evil = {"Origin": "https://attacker.example"}
    r = httpx.get(base + "/config", headers=evil, timeout=30)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    pre = httpx.options(base + "/login", timeout=30, headers={
        **evil, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    login = httpx.post(base + "/login", data={"username": USER, "password": PASSWORD},
                       headers=evil, timeout=30)
    assert login.status_code == 403 and "set-cookie" not in login.headers
    own = httpx.get(base + "/config", headers={"Origin": base}, timeout=30)  # same origin
    assert own.status_code != 403


@pytest.mark.slow
def test_every_response_forbids_framing(exposed):
    base, _ = exposed
    for path in ("/", "/config", "/gradio_api/info", "/no-such-page"):
        r = httpx.get(base + path, timeout=30)
        assert r.headers.get("x-frame-options") == "DENY", path
        csp = ", ".join(v for k, v in r.headers.multi_items() if k == "content-security-policy")
        assert "frame-ancestors 'none'" in csp, path


@pytest.mark.slow
def test_one_login_cannot_read_another_logins_answer_file(exposed):
    base, _ = exposed
    a, b = _login(base), _login(base)
    try:
        answer = _classify(a)
        url = answer["file"]["url"]
        assert "replens-answers" in url and not Path(answer["file"]["path"]).parent.name.endswith(
            "-public")  # the folder names its login
        assert a.get(url).status_code == 200
        assert b.get(url).status_code == 404
        assert httpx.get(url, timeout=30).status_code in (401, 403, 404)  # no login at all
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_uploads_and_answers_are_in_private_folders(exposed):
    base, demo = exposed
    a = _login(base)
    try:
        answer = _classify(a)
    finally:
        a.close()
    temp = Path(os.environ["GRADIO_TEMP_DIR"])
    assert Path(answer["upload"]).resolve().is_relative_to(temp.resolve())
    answer_dir = Path(answer["file"]["path"]).parent
    for folder in (temp, answer_dir.parent, answer_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert demo.delete_cache[1] == 3600  # uploads age out with the answers (serve.yaml)


@pytest.mark.slow
def test_localhost_server_refuses_a_rebound_host(tmp_path, monkeypatch):
    """DNS rebinding: a page on attacker.example whose name now points at 127.0.0.1."""
    from app.server import launch

    monkeypatch.delenv("REPLENS_AUTH", raising=False)  # no login on 127.0.0.1
    port = _port()
    demo = launch(tmp_path, port=port, block=False)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/config", timeout=30).status_code == 200
        assert httpx.get(f"http://localhost:{port}/config", timeout=30).status_code == 200
        r = httpx.get(base + "/config", headers={"Host": f"attacker.example:{port}"}, timeout=30)
        assert r.status_code == 400
    finally:
        demo.close()


# --- the rules themselves (no server) ---------------------------------------------------------
def test_the_throttle_refuses_after_n_failures_until_the_window_passes():
    from app.guard import LoginThrottle

    now = [1000.0]
    t = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert t.retry_after("1.2.3.4") == 0
        t.failed("1.2.3.4")
    assert t.retry_after("1.2.3.4") == pytest.approx(60) and t.retry_after("5.6.7.8") == 0
    now[0] += 59
    assert t.retry_after("1.2.3.4") == pytest.approx(1)
    now[0] += 1.5
    assert t.retry_after("1.2.3.4") == 0
    t.failed("5.6.7.8")
    t.succeeded("5.6.7.8")
    assert t.failed("5.6.7.8") == 1  # a login forgets the client's failures


def test_a_failure_exactly_one_window_old_is_forgotten():
    from app.guard import LoginThrottle

    now = [1000.0]
    t = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        t.failed("1.2.3.4")
    now[0] += 60
    assert t.retry_after("1.2.3.4") == 0 and t.failed("1.2.3.4") == 1


def test_host_and_origin_rules(tmp_path):
    from app.guard import LoginThrottle, Policy, host_name

    assert host_name("[::1]:7860") == "::1" and host_name("Replens.Example.org.:443") == \
        "replens.example.org"
    p = Policy(["replens.example.org"], ["https://portal.example.org"], LoginThrottle(5, 60),
               tmp_path)
    assert p.host_ok("localhost:7860", None) and p.host_ok("replens.example.org", None)
    assert p.host_ok("10.0.0.5:7860", ("10.0.0.5", 7860))  # the address it was reached at
    assert not p.host_ok("attacker.example", ("127.0.0.1", 7860)) and not p.host_ok(None, None)
    assert p.origin_ok("https://replens.example.org", "replens.example.org")
    assert p.origin_ok("https://portal.example.org/", "replens.example.org")
    assert not p.origin_ok("https://replens.example.org.attacker.example", "replens.example.org")
    assert not p.origin_ok("null", "replens.example.org")


def test_a_login_set_in_the_environment_is_asked_on_localhost_too(monkeypatch):
    from app.server import serving_auth

    monkeypatch.setenv("REPLENS_AUTH", "analyst:pw")
    assert serving_auth(expose=False) == ("analyst", "pw")  # behind a proxy on this machine
    monkeypatch.delenv("REPLENS_AUTH")
    assert serving_auth(expose=False) is None
