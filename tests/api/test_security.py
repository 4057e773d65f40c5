"""Seed 003 §5.1 on the API: tokens and roles, size and rate limits, validation naming the
field, one error shape with a request id and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import queries
from api.app import create_app
from api.security import confine
from api.settings import ApiSettings
from stream.settings import SettingsError
from tests.api.conftest import ADMIN_TOKEN, READ_TOKEN, Populated, api_settings, auth
from tests.conftest import ROOT, Services


def _shape(r: object, status: int) -> dict:
    resp = r  # httpx.Response
    assert resp.status_code == status, resp.text  # type: ignore[attr-defined]
    err = resp.json()["error"]  # type: ignore[attr-defined]
    assert err["status"] == status
    assert err["request_id"] and err["request_id"] == resp.headers["x-request-id"]  # type: ignore[attr-defined]
    assert "Traceback" not in resp.text and 'File "' not in resp.text  # type: ignore[attr-defined]
    return dict(err)


def test_tokens_and_roles(client: TestClient) -> None:
    e = _shape(client.get("/api/v1/clusters", headers={"Authorization": ""}), 401)
    assert e["code"] == "unauthorized"
    r = client.get("/api/v1/clusters", headers=auth("x" * 30))
    _shape(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/clusters", headers=auth(READ_TOKEN)).status_code == 200
    assert client.get("/api/v1/clusters", headers=auth(ADMIN_TOKEN)).status_code == 200
    # a read-only token may not submit or cancel jobs
    line = (
        b'{"item_id":"a","embedding_type":"document","embedding_model":"m",'
        b'"event_time":0,"vector":[1,0]}\n'
    )
    r = client.post(
        "/api/v1/cluster/batch",
        content=line,
        headers={**auth(READ_TOKEN), "Content-Type": "application/x-ndjson"},
    )
    assert _shape(r, 403)["code"] == "forbidden"
    r = client.post("/api/v1/cluster/cancel/abc", headers=auth(READ_TOKEN))
    _shape(r, 403)


def test_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in list(os.environ):
        if k.startswith("CLUSTERER_API_"):
            monkeypatch.delenv(k)
    with pytest.raises(SettingsError, match="no API token"):
        ApiSettings.from_env()
    monkeypatch.setenv("CLUSTERER_API_OPEN", "true")
    assert ApiSettings.from_env().open
    monkeypatch.setenv("CLUSTERER_API_OPEN", "maybe")
    with pytest.raises(SettingsError, match="CLUSTERER_API_OPEN"):
        ApiSettings.from_env()
    monkeypatch.delenv("CLUSTERER_API_OPEN")
    secret = tmp_path / "tokens"
    secret.write_text(f"# api tokens\nread {READ_TOKEN}\nadmin {ADMIN_TOKEN}\n")
    monkeypatch.setenv("CLUSTERER_API_TOKEN_FILE", str(secret))
    s = ApiSettings.from_env()
    assert s.role_of(READ_TOKEN) == "read" and s.role_of(ADMIN_TOKEN) == "admin"
    assert s.role_of("nope") is None
    secret.write_text("superuser abc\n")
    with pytest.raises(SettingsError, match="line 1"):
        ApiSettings.from_env()
    monkeypatch.delenv("CLUSTERER_API_TOKEN_FILE")
    monkeypatch.setenv("CLUSTERER_API_TOKENS", "short")
    with pytest.raises(SettingsError, match="16 characters"):
        ApiSettings.from_env()
    monkeypatch.setenv("CLUSTERER_API_TOKENS", READ_TOKEN)
    monkeypatch.setenv("CLUSTERER_API_PORT", "eighty")
    with pytest.raises(SettingsError, match="CLUSTERER_API_PORT"):
        ApiSettings.from_env()


def test_cli_refuses_to_start_open_by_accident() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERER_API_")}
    p = subprocess.run(
        [sys.executable, "-m", "stream.cli", "api"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "no API token" in p.stderr


def test_request_too_large_is_413(populated: Populated, services: Services) -> None:
    app = create_app(api_settings(populated, services, max_request_bytes=2000))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(auth())
        big = {"vector": [0.5] * 2000, "filters": {"scope": "x"}}
        e = _shape(c.post("/api/v1/clusters/search", json=big), 413)
        assert e["code"] == "request_too_large"

        def chunks():  # no Content-Length: the limit holds for a streamed body too
            for _ in range(10):
                yield b" " * 500

        r = c.post(
            "/api/v1/clusters/search",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        _shape(r, 413)
        assert c.post("/api/v1/clusters/search", json={}).status_code == 200


def test_rate_limit_is_429_per_client(populated: Populated, services: Services) -> None:
    app = create_app(api_settings(populated, services, rate_per_minute=60, rate_burst=3))
    with TestClient(app, raise_server_exceptions=False) as c:
        codes = [c.get("/api/v1/statistics", headers=auth()).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = c.get("/api/v1/statistics", headers=auth())
        e = _shape(r, 429)
        assert e["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
        # made-up tokens share the address's bucket (no fresh bucket per guess)
        guesses = [c.get("/api/v1/statistics", headers=auth(f"{i}" * 30)) for i in range(5)]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]
        # another client (another valid token) has its own bucket; health is never limited
        assert c.get("/api/v1/statistics", headers=auth(ADMIN_TOKEN)).status_code == 200
        assert c.get("/health").status_code == 200


def test_validation_names_the_field(client: TestClient) -> None:
    e = _shape(client.get("/api/v1/clusters", params={"limit": 0}), 422)
    assert e["fields"][0]["field"] == "query.limit"
    e = _shape(client.get("/api/v1/clusters", params={"status": "gone"}), 422)
    assert e["fields"][0]["field"].startswith("query.status")
    e = _shape(client.post("/api/v1/clusters/search", json={"top_k": "many"}), 422)
    assert e["fields"][0]["field"] == "body.top_k"
    e = _shape(client.post("/api/v1/clusters/search", json={"filters": {"colour": 1}}), 422)
    assert e["fields"][0]["field"] == "body.filters.colour"
    e = _shape(client.post("/api/v1/clusters/search", content=b"{not json"), 422)
    # NUL cannot reach PostgreSQL (found by the fuzz test as a 500)
    e = _shape(client.get("/api/v1/clusters", params={"domain": "a\x00b"}), 422)
    assert e["fields"][0]["field"] == "query.domain"
    nul_cursor = queries.encode_cursor({"s": "size", "o": "desc", "v": 1, "id": "a\x00"})
    e = _shape(client.get("/api/v1/clusters", params={"sort": "size", "cursor": nul_cursor}), 422)
    assert e["fields"][0]["field"] == "query.cursor"
    _shape(client.get("/api/v1/nowhere"), 404)
    _shape(client.delete("/api/v1/clusters"), 405)


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    r = client.get("/api/v1/clusters/none", headers={"X-Request-ID": "abc-123"})
    assert _shape(r, 404)["request_id"] == "abc-123"
    r = client.get("/api/v1/clusters/none", headers={"X-Request-ID": "bad id\twith tabs"})
    assert _shape(r, 404)["request_id"] != "bad id\twith tabs"


def test_internal_error_has_the_shape_and_no_trace(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(*a: object, **k: object) -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(queries, "list_clusters", boom)
    client.app.state.cache.answer_seconds = 0  # type: ignore[attr-defined]
    r = client.get("/api/v1/clusters")
    e = _shape(r, 500)
    assert e["code"] == "internal_error"
    assert "secret" not in r.text and "RuntimeError" not in r.text
    # the operator finds the cause under the request id in the log
    assert any(e["request_id"] in rec.getMessage() for rec in caplog.records)


def test_paths_are_confined_to_the_data_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "jobs" / "a").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert confine(root, "jobs/a") == (root / "jobs" / "a").resolve()
    for bad in ("../outside", "/etc", "jobs/../../outside", "escape", "escape/x", "", "a\x00b"):
        with pytest.raises(Exception) as info:
            confine(root, bad)
        assert getattr(info.value, "status", None) == 422, bad
