"""A thin JSON client over the official Kubernetes client's connection and authentication.

The daemon works on plain dicts (a cache of thousands of pods deserialised into generated
model classes costs more time than the decision itself), so requests go through
`ApiClient.param_serialize`/`call_api`, which keep the kubeconfig's TLS and token
handling, and responses are parsed with orjson (a list of 5,000 pods parses several times
faster than with `json`, which is most of the daemon's start). Every non-watch call passes a token-bucket
rate limiter, as client-go's QPS/burst does, so comparisons with kube-scheduler are fair
and a large backlog cannot flood the API server.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class KubeError(Exception):
    """An API call that did not succeed: `status` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, reason: str, body: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.body = dict(body or {})
        message = self.body.get("message") or reason
        super().__init__(f"{status} {message}")


class RateLimiter:
    """Token bucket: `qps` tokens a second, at most `burst` saved up."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.qps <= 0:
            return
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.qps
            time.sleep(wait)


class NoCredentials(Exception):
    """No kubeconfig given or found and not running in a pod."""


def find_credentials(kubeconfig: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Where to read credentials from, in the order other Kubernetes tools look: the flag,
    then $KUBECONFIG, then the in-cluster ServiceAccount, then ~/.kube/config. Returns a
    kubeconfig path or IN_CLUSTER; NoCredentials names what was tried."""
    env = os.environ if env is None else env
    if kubeconfig:
        return kubeconfig
    listed = [p for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p]
    if listed:
        return os.pathsep.join(listed)
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"):
        return IN_CLUSTER
    home = Path(env.get("HOME") or Path.home()) / ".kube" / "config"
    if home.is_file():
        return str(home)
    raise NoCredentials(
        "no Kubernetes credentials: pass --kubeconfig PATH, set $KUBECONFIG, run in a pod with a "
        f"ServiceAccount, or write {home}"
    )


IN_CLUSTER = "<in-cluster>"


def api_client_from(kubeconfig: str | None, env: Mapping[str, str] | None = None) -> client.ApiClient:
    """A client from the credentials `find_credentials` finds."""
    where = find_credentials(kubeconfig, env)
    if where == IN_CLUSTER:
        config.load_incluster_config()
        return client.ApiClient()
    # Several files in $KUBECONFIG are merged by the loader, as kubectl merges them.
    return config.new_client_from_config(config_file=where)


class Kube:
    def __init__(self, api: client.ApiClient, qps: float = 50.0, burst: int = 100) -> None:
        self.api = api
        self.limiter = RateLimiter(qps, burst)
        # One connection per concurrent call: binds run in parallel threads.
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 64

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: float | tuple[float, float] | None,
        guard: Callable[[], None] | None = None,
    ):
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method,
            path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        if guard is not None:
            guard()
        try:
            return self.api.call_api(*params, _request_timeout=timeout)
        except ApiException as exc:
            raise KubeError(exc.status or 0, str(exc.reason), _parse(exc.body)) from exc
        except Exception as exc:  # connection refused, reset, timeout: the server is away
            raise KubeError(0, f"{type(exc).__name__}: {exc}") from exc

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout: float | tuple[float, float] = 30.0,
        guard: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """`guard` runs after the rate limiter, right before the request is sent, and may raise
        to keep it from being sent (the leader fence: the limiter can hold a call for seconds)."""
        self.limiter.acquire()
        resp = self._send(method, path, query, body, content_type, timeout, guard)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise KubeError(resp.status, resp.reason or "", _parse(data))
        return _parse(data)

    def list(self, path: str, page: int = 500) -> tuple[list[dict[str, Any]], str]:
        """All objects and the list's resourceVersion. Like client-go's reflectors, the first
        page asks for resourceVersion 0, which the API server answers whole from its watch
        cache (no paging, no etcd read); a server without the cache pages as usual."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            query = {"limit": page, "continue": token} if token else {"limit": page, "resourceVersion": "0"}
            out = self.request("GET", path, query)
            items.extend(out.get("items") or [])
            token = (out.get("metadata") or {}).get("continue")
            if not token:
                return items, out["metadata"]["resourceVersion"]

    def watch(self, path: str, resource_version: str, timeout_s: int = 300) -> Iterator[dict[str, Any]]:
        """Watch events from `resource_version` until the server ends the stream. An ERROR
        event is raised as KubeError (410: the version is too old, relist)."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_s,
        }
        resp = self._send("GET", path, query, None, JSON, (10, timeout_s + 30))
        raw = resp.response
        try:
            if not 200 <= resp.status < 300:
                raise KubeError(resp.status, resp.reason or "", _parse(raw.read()))
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                *lines, buf = (buf + chunk).split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    if event.get("type") == "ERROR":
                        obj = event.get("object") or {}
                        raise KubeError(int(obj.get("code", 0)), str(obj.get("reason", "")), obj)
                    yield event
        except KubeError:
            raise
        except Exception as exc:
            raise KubeError(0, f"watch of {path} broke: {type(exc).__name__}: {exc}") from exc
        finally:
            raw.release_conn()


def _parse(data: bytes | str | None) -> dict[str, Any]:
    if not data:
        return {}
    try:
        out = orjson.loads(data)
    except ValueError:
        return {"message": data[:200].decode() if isinstance(data, bytes) else str(data)[:200]}
    return out if isinstance(out, dict) else {"items": out}
