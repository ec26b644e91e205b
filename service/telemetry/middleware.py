"""HTTP requests and latencies by route, counted by a pure ASGI middleware.

The route label is the matched route's template (`/v1/jobs/{job_id}`), never the
raw path, so the number of series stays bounded whatever clients ask for. A
pure ASGI wrapper (no BaseHTTPMiddleware) keeps the cost to a clock read, a dict
lookup and two increments per request: status polling is the gateway's hot path.
"""

from __future__ import annotations

from time import perf_counter

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Not in prometheus_client's default registry: service.telemetry.exposition picks the
# registry at scrape time (these two in one process, or the multiprocess files).
REQUESTS = Counter(
    "stillhouse_http_requests_total",
    "HTTP requests answered by the gateway, by method, route template and status code.",
    ("method", "route", "status"),
    registry=None,
)
LATENCY = Histogram(
    "stillhouse_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ("method", "route"),
    registry=None,
    # Status reads take a few milliseconds; uploads and predicts may take many seconds.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests no route matched (404s, probes for random paths) share one label value.
UNMATCHED = "<unmatched>"

_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    child = _children.get(key)
    if child is None:  # labels() takes a lock and builds a tuple: once per series, not per request
        child = _children[key] = (
            REQUESTS.labels(method, route, str(status)),
            LATENCY.labels(method, route),
        )
    child[0].inc()
    child[1].observe(seconds)


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500  # an exception that escapes the app is answered 500 further out

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router stores the matched route in the scope (starlette.routing.Router.app).
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            observe(method, route, status, perf_counter() - start)
