import logging

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import SecretStr

from ingest.auth import ApiKeys
from ingest.deps import require_read_key
from ingest.http.errors import install_error_handlers


def read_app(keys: list[str]) -> FastAPI:
    app = FastAPI()
    app.state.read_api_keys = ApiKeys([SecretStr(key) for key in keys])
    install_error_handlers(app, [])

    @app.get("/private", dependencies=[Depends(require_read_key)])
    async def private() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def get(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        return await http.get("/private", headers=headers)


def test_api_keys_accept_only_configured_keys() -> None:
    keys = ApiKeys([SecretStr("alpha"), SecretStr("beta")])
    assert keys
    assert keys.accepts("alpha")
    assert keys.accepts("beta")
    assert not keys.accepts("alph")
    assert not keys.accepts("")
    assert not ApiKeys([])
    assert not ApiKeys([]).accepts("")


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic cmVhZDpr"},
        {"Authorization": "reader-key"},
    ],
)
async def test_read_key_missing_or_wrong_is_401_unauthorized(
    headers: dict[str, str] | None,
) -> None:
    response = await get(read_app(["reader-key"]), headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {
        "error": "unauthorized",
        "message": response.json()["message"],
        "details": [],
    }


async def test_read_key_accepted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        response = await get(read_app(["reader-key"]), {"Authorization": "Bearer reader-key"})
    assert response.status_code == 200
    assert "reader-key" not in caplog.text


async def test_read_api_is_closed_without_keys() -> None:
    response = await get(read_app([]), {"Authorization": "Bearer anything"})
    assert response.status_code == 401
