"""A model's name is user text: the download's Content-Disposition escapes it the
same way whether the file comes from a local folder or a remote store."""

from __future__ import annotations

import re
import uuid
from email.message import Message
from email.utils import collapse_rfc2231_value
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from service.main import create_app
from tests.conftest import new_tenant
from tests.onnx_crafted import plain_onnx

NAME = "q\"uo'te; filename=evil.exe; ünï — 模型"


def _download(client: TestClient, headers: dict[str, str]) -> tuple[str, bytes]:
    content = plain_onnx()
    created = client.post(
        "/v1/models", headers=headers, files={"file": ("m.onnx", content)}, data={"name": NAME}
    )
    assert created.status_code == 201, created.text
    response = client.get(f"/v1/models/{created.json()['id']}/file", headers=headers)
    assert response.status_code == 200, response.text
    assert response.content == content
    return response.headers["content-disposition"], content


def _check(disposition: str) -> None:
    match = re.fullmatch(r'attachment; filename="([^"]*)"; filename\*=utf-8\'\'(\S+)', disposition)
    assert match is not None, disposition
    fallback, encoded = match.groups()
    assert unquote(encoded) == NAME + ".onnx"  # the exact name, for clients that read filename*
    assert fallback.isascii() and not set(fallback) & set('";\\%'), fallback
    assert fallback.endswith(".onnx")
    # A standard parser reads exactly the name the user gave (quotes and ';' added nothing).
    message = Message()
    message["content-disposition"] = disposition
    params = message.get_params(header="content-disposition")
    assert params is not None and len(params) == 3, params
    assert params[0] == ("attachment", "") and params[1] == ("filename", fallback)
    assert params[2][0] == "filename" and collapse_rfc2231_value(params[2][1]) == NAME + ".onnx"


@pytest.mark.parametrize("store", ["remote", "local"])
def test_download_escapes_the_file_name(client: TestClient, settings: Settings, store: str) -> None:
    if store == "local":
        disposition, _ = _download(client, new_tenant(settings))
    else:
        # An fsspec memory store is "not local": the download streams from the store.
        remote = settings.model_copy(
            update={
                "storage_url": f"memory://stillhouse-{uuid.uuid4().hex[:8]}",
                "broker_prefix": f"{settings.broker_prefix}download-{uuid.uuid4().hex[:6]}:",
            }
        )
        with TestClient(create_app(remote)) as remote_client:
            assert remote_client.app.state.stillhouse.store.is_local is False  # type: ignore[attr-defined]
            disposition, _ = _download(remote_client, new_tenant(remote))
    _check(disposition)
