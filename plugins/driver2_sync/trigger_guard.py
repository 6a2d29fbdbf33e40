"""Refuses, at the api-server, a trigger whose conf holds a key the DAG declares no param for.

Airflow checks every declared param against its schema when a run is triggered (a 400, and no
run), but lets any other key through into the run's conf, where the task would not look at it.
For the DAGs guarded here an unknown key is an operator's mistake, e.g. `dosier` for `dossier`:
it gets a 400 naming the key before any run exists. The trigger form of the UI sends exactly
the declared params, so it is never refused for this.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote

from driver2_sync.settings import CUSTOM_IMPORT_DAG_ID

log = logging.getLogger(__name__)

GUARDED_DAG_IDS = frozenset({CUSTOM_IMPORT_DAG_ID})
# POST /api/v2/dags/{dag_id}/dagRuns, the one way the UI and the REST API start a run.
TRIGGER_PATH = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")


class UnknownParamGuard:
    """ASGI middleware: answers 400 to a guarded DAG's trigger whose conf has undeclared keys.

    Anything else, a body that is no JSON object included, goes on to Airflow untouched, and so
    does a caller who is not signed in: Airflow answers that one with its 401 or 403 first.
    """

    def __init__(self, app, dag_ids: Iterable[str] = GUARDED_DAG_IDS):
        self.app = app
        self.dag_ids = frozenset(dag_ids)

    async def __call__(self, scope, receive, send):
        dag_id = self._guarded_dag_id(scope)
        if dag_id is None:
            await self.app(scope, receive, send)
            return

        body = await _read_body(receive)
        replay = _replay(body, receive)
        unknown = await self._unknown_keys(scope, dag_id, body)
        if not unknown:
            await self.app(scope, replay, send)
            return

        from starlette.responses import JSONResponse

        declared, keys = unknown
        message = (
            f"Unknown param(s) for {dag_id}: {', '.join(sorted(keys))}. No run was started."
            f" This DAG takes only: {', '.join(sorted(declared))}."
        )
        log.warning("Refused a trigger of %s with unknown param(s) %s", dag_id, sorted(keys))
        await JSONResponse({"detail": message}, status_code=400)(scope, replay, send)

    def _guarded_dag_id(self, scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        match = TRIGGER_PATH.search(scope["path"])
        dag_id = unquote(match["dag_id"]) if match else None
        return dag_id if dag_id in self.dag_ids else None

    async def _unknown_keys(self, scope, dag_id: str, body: bytes):
        """Return (declared params, unknown keys) when the conf has unknown keys, else None."""
        from starlette.concurrency import run_in_threadpool

        try:
            conf = json.loads(body).get("conf")
        except (ValueError, AttributeError):
            return None
        if not isinstance(conf, dict) or not conf or not await _is_signed_in(scope):
            return None
        declared = await run_in_threadpool(_read_declared_params, scope["app"], dag_id)
        if declared is None:
            return None
        unknown = set(conf) - declared
        return (declared, unknown) if unknown else None


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """Return a receive callable that gives the body once more, then waits as the server does."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _is_signed_in(scope) -> bool:
    # Airflow's own check, so that a caller who is not signed in learns nothing of the params.
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
    from fastapi import HTTPException
    from starlette.requests import Request

    request = Request(scope)
    try:
        await get_user(request, None, await bearer_scheme(request))
    except HTTPException:
        return False
    return True


def _read_declared_params(app, dag_id: str) -> frozenset[str] | None:
    """Return the params the DAG's latest version declares, or None for an unknown DAG."""
    from airflow.utils.session import create_session

    with create_session(scoped=False) as session:
        dag = app.state.dag_bag.get_latest_version_of_dag(dag_id, session=session)
    return None if dag is None else frozenset(dag.params)
