"""The API reference works offline and documents every operation.

- /docs and /redoc load only assets this server serves (no CDN), and each answers 200
  with the content type a browser needs to run it.
- Every operation in /openapi.json declares its error responses with the one
  {error, detail} body and an example of it, and shows an example of its request or of
  its success response.
- Every example in the document is valid against the schema it illustrates, and the
  hand-written ones also parse as the pydantic models the API really uses."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from core.spec import AnyJobCreate
from service import examples
from service.datasets.schemas import DatasetPublic
from service.fleet.endpoints import WorkerPublic
from service.jobs.schemas import JobPublic, JobReport, MetricPoint
from service.models.schemas import ModelPublic, PredictRequest, PredictResponse, ZooSpec

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _Assets(HTMLParser):
    """Every URL a page makes the browser load: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_reference_pages_load_only_local_assets(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text, response.text
    # What the bundles themselves link to (ReDoc's vendor logo) the browser must not fetch.
    policy = response.headers["content-security-policy"]
    assert "img-src 'self' data:" in policy and "connect-src 'self'" in policy, policy
    parser = _Assets()
    parser.feed(response.text)
    assert any(u.endswith(".js") for u in parser.urls), parser.urls
    if page == "/docs":
        assert any(u.endswith(".css") for u in parser.urls), parser.urls
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"].startswith(CONTENT_TYPES[suffix]), (url, asset)
        assert len(asset.content) > 100, url


def _deref(doc: dict[str, Any], node: Any) -> Any:
    """A schema node with its `$ref` (to #/components/...) followed."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _has_example(doc: dict[str, Any], node: Any, seen: set[str] | None = None) -> bool:
    """An `example` or `examples` anywhere in a media type or schema, through references."""
    seen = set() if seen is None else seen
    if isinstance(node, list):
        return any(_has_example(doc, item, seen) for item in node)
    if not isinstance(node, dict):
        return False
    if node.get("example") is not None or node.get("examples"):
        return True
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return False
        seen.add(ref)
        return _has_example(doc, _deref(doc, node), seen)
    return any(_has_example(doc, value, seen) for value in node.values())


def _operations(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_operation_documents_its_errors_and_an_example(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    operations = _operations(doc)
    assert len(operations) >= 20
    assert "ApiKey" in doc["components"]["securitySchemes"]
    problems: list[str] = []
    for label, operation in operations:
        responses = operation["responses"]
        errors = {int(code): r for code, r in responses.items() if int(code) >= 400}
        if not any(400 <= code < 500 for code in errors):
            problems.append(f"{label}: no 4xx response")
        if operation.get("security") and 401 not in errors:
            problems.append(f"{label}: needs a key but declares no 401")
        for code, declared in errors.items():
            media = declared.get("content", {}).get("application/json", {})
            if media.get("schema") != {"$ref": "#/components/schemas/ErrorBody"}:
                problems.append(f"{label}: {code} is not the ErrorBody schema")
            example = media.get("example")
            if not (isinstance(example, dict) and set(example) == {"error", "detail"}):
                problems.append(f"{label}: {code} has no {{error, detail}} example")
        request = [*operation.get("parameters", []), operation.get("requestBody", {})]
        success = [r for code, r in responses.items() if code.startswith("2")]
        if operation.get("requestBody") and not _has_example(doc, operation["requestBody"]):
            problems.append(f"{label}: its request body has no example")
        json_success = [r for r in success if "application/json" in r.get("content", {})]
        if json_success and not _has_example(doc, json_success):
            problems.append(f"{label}: its JSON response has no example")
        if not _has_example(doc, request) and not _has_example(doc, success):
            problems.append(f"{label}: no example in its request or its 2xx response")
    assert problems == [], "\n".join(problems)


def _examples(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every example in the document."""
    found: list[tuple[str, dict[str, Any], Any]] = []
    for name, schema in doc["components"]["schemas"].items():
        found += [(f"schema {name}", schema, ex) for ex in schema.get("examples", [])]
        for prop, sub in schema.get("properties", {}).items():
            found += [(f"schema {name}.{prop}", sub, ex) for ex in sub.get("examples", [])]
    for label, operation in _operations(doc):
        for param in operation.get("parameters", []):
            schema = param.get("schema", {})
            found += [(f"{label} {param['name']}", schema, ex) for ex in schema.get("examples", [])]
        media_types = [("request", operation.get("requestBody", {}).get("content", {}))]
        media_types += [(code, r.get("content", {})) for code, r in operation["responses"].items()]
        for where, content in media_types:
            for media in content.values():
                values = [media["example"]] if "example" in media else []
                values += [e["value"] for e in media.get("examples", {}).values()]
                found += [(f"{label} {where}", media.get("schema", {}), v) for v in values]
    return found


def test_every_example_is_valid_against_its_schema(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    found = _examples(doc)
    assert len(found) >= 40, len(found)
    invalid = []
    for where, schema, example in found:
        # The fragment carries the document's components, so its references resolve.
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})
        errors = [e.message for e in validator.iter_errors(example)]
        if errors:
            invalid.append(f"{where}: {errors[:2]}")
    assert invalid == [], "\n".join(invalid)


def test_examples_reach_the_document_whole(client: TestClient) -> None:
    """FastAPI writes the document without nulls; the examples keep theirs (service.docs)."""
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name, values in examples.schema_examples().items():
        assert schemas[name]["examples"] == values, name
    shown = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert shown["examples"] == examples.JOB_CREATE_EXAMPLES


@pytest.mark.parametrize(
    ("model", "example"),
    [
        (ModelPublic, examples.MODEL),
        (DatasetPublic, examples.DATASET),
        (JobPublic, examples.JOB),
        (JobReport, examples.REPORT),
        (WorkerPublic, examples.WORKER),
        (PredictRequest, examples.PREDICT_REQUEST),
        (PredictResponse, examples.PREDICT_RESPONSE),
        (ZooSpec, examples.ZOO_SPEC),
        *[(MetricPoint, point) for point in examples.METRICS],
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_examples_parse_as_the_api_models(model: type, example: dict[str, Any]) -> None:
    parsed = model.model_validate(example)  # type: ignore[attr-defined]
    assert parsed.model_dump(mode="json", exclude_unset=True).keys() <= example.keys()


@pytest.mark.parametrize("name", sorted(examples.JOB_CREATE_EXAMPLES))
def test_job_examples_are_jobs_the_api_accepts(name: str) -> None:
    body = examples.JOB_CREATE_EXAMPLES[name]["value"]
    job = TypeAdapter(AnyJobCreate).validate_python(body)
    assert job.name == body["name"]
