"""The emulator's HTTP surface (FastAPI): the Azure ML ARM endpoints the SDK calls, a token service, controls.

Routes are matched on paths, never on ``api-version`` (it differs per operation and release):

* token service (what MSAL calls for a service principal whose authority is the emulator):
  ``GET /{tenant}/v2.0/.well-known/openid-configuration``, ``POST /{tenant}/oauth2/v2.0/token``
  (any client id/secret; an unsigned JWT valid for an hour);
* ARM, under ``/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}``:
  ``GET`` (workspace), ``GET /computes/{c}``, ``GET /codes/{n}/versions/{v}``,
  ``GET /environments/{n}/versions/{v}``, ``PUT|GET /jobs/{name}``, ``POST /jobs/{name}/cancel`` (202,
  ``Location`` + ``Retry-After``; the location answers 202 until the job has stopped, then 200);
  run history and datastores for the job's logs are in ``artifacts.py``;
* controls (loopback clients only): ``GET /_emulator/health``, ``GET /_emulator/ledger``,
  ``POST /_emulator/faults`` (body as ``Workspace.add_fault``), ``GET /_emulator/jobs/{name}/log``,
  ``POST /_emulator/reset`` (cancel and forget every job and fault: a test's fresh workspace).

Errors use ARM's body, ``{"error": {"code", "message"}}``, which the SDK maps to its exceptions (404 ->
``ResourceNotFoundError``). Every request is logged (``Workspace.log_request``).
"""
from __future__ import annotations

import asyncio

import base64
import json
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from devstack.aml_emulator.cluster import Cluster
from devstack.aml_emulator.state import TERMINAL, Refused, Workspace

_WS = ("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _error(status: int, code: str, message: str, headers: dict | None = None):
    return JSONResponse({"error": {"code": code, "message": message, "details": []}}, status_code=status,
                        headers=headers)


def _jwt(claims: dict[str, Any]) -> str:
    def part(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def build_app(ws: Workspace, cluster: Cluster, base_url: str, location: str = "local"):
    """The FastAPI application serving ``ws`` (jobs run on ``cluster``); ``base_url`` is the emulator's https URL."""
    app = FastAPI(title="Azure ML emulator", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def log_and_faults(request: Request, call_next):
        path = request.url.path
        if path.startswith("/_emulator/") and (request.client is None or request.client.host not in _LOOPBACK):
            response = _error(403, "Forbidden", "the emulator's controls answer loopback clients only")
        elif (path.startswith("/subscriptions/") and (fault := ws.take_http_fault(request.method, path))
              and fault.get("status") is None):  # a slow answer: the request is served, its response held back
            response = await call_next(request)
            await asyncio.sleep(float(fault["delay"]))
        elif path.startswith("/subscriptions/") and fault:
            headers = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else None
            response = _error(fault["status"], "ServiceUnavailable" if fault["status"] == 503 else
                              "TooManyRequests" if fault["status"] == 429 else "InternalServerError",
                              f"injected fault {fault['status']}", headers)
        else:
            response = await call_next(request)
        ws.log_request(request.method, path, response.status_code)
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return _error(exc.status, exc.code, exc.message)

    def scope(sub: str, rg: str, name: str) -> None:
        if (sub, rg.lower(), name) != (ws.sub, ws.rg.lower(), ws.ws):
            raise Refused(404, "ResourceNotFound", f"workspace {sub}/{rg}/{name} is not this emulator's ({ws.arm_id})")

    def arm(kind: str, name: str, properties: dict, rid: str) -> dict:
        return {"id": rid, "name": name, "type": f"Microsoft.MachineLearningServices/workspaces/{kind}",
                "properties": properties, "systemData": {"createdAt": "2026-01-01T00:00:00+00:00",
                                                         "createdBy": "emulator", "createdByType": "Application"}}

    # --- token service ------------------------------------------------------------------

    @app.get("/{tenant}/v2.0/.well-known/openid-configuration")
    def openid(tenant: str):
        return {"issuer": f"{base_url}/{tenant}/v2.0", "token_endpoint": f"{base_url}/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base_url}/{tenant}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base_url}/{tenant}/oauth2/v2.0/devicecode",
                "token_endpoint_auth_methods_supported": ["client_secret_post"], "tenant_region_scope": None}

    @app.post("/{tenant}/oauth2/v2.0/token")
    async def token(tenant: str, request: Request):
        from urllib.parse import parse_qs

        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        now = int(time.time())
        scope_ = str(form.get("scope", "")).split()[0] if form.get("scope") else base_url
        claims = {"aud": scope_.removesuffix("/.default"), "iss": f"{base_url}/{tenant}/v2.0", "tid": tenant,
                  "oid": form.get("client_id", "emulator"), "appid": form.get("client_id", ""), "iat": now,
                  "nbf": now, "exp": now + 3600}
        return {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": _jwt(claims)}

    # --- workspace, computes, assets ---------------------------------------------------

    @app.get(_WS)
    def workspace(sub: str, rg: str, request: Request):
        scope(sub, rg, request.path_params["ws"])
        return {"id": ws.arm_id, "name": ws.ws, "location": location,
                "type": "Microsoft.MachineLearningServices/workspaces", "kind": "Default",
                "identity": {"type": "SystemAssigned"},
                "properties": {"friendlyName": ws.ws, "workspaceId": "00000000-0000-0000-0000-00000000e111",
                               "discoveryUrl": f"{base_url}/_discovery", "provisioningState": "Succeeded",
                               "storageAccount": f"/subscriptions/{ws.sub}/resourceGroups/{ws.rg}/providers/"
                                                 "Microsoft.Storage/storageAccounts/devstoreaccount1"}}

    @app.get(_WS + "/computes/{name}")
    def compute(sub: str, rg: str, name: str, request: Request):
        scope(sub, rg, request.path_params["ws"])
        if name not in ws.computes:
            raise Refused(404, "ResourceNotFound", f"compute {name} not found in workspace {ws.ws}")
        return {**arm("computes", name, {"computeType": "AmlCompute", "provisioningState": "Succeeded",
                                         "computeLocation": location, "properties": {
                                             "vmSize": "STANDARD_DS3_V2", "vmPriority": "Dedicated",
                                             "scaleSettings": {"minNodeCount": 0, "maxNodeCount": ws.computes[name],
                                                               "nodeIdleTimeBeforeScaleDown": "PT120S"}}},
                    f"{ws.arm_id}/computes/{name}"), "location": location}

    @app.get(_WS + "/codes/{name}/versions/{version}")
    def code(sub: str, rg: str, name: str, version: str, request: Request):
        scope(sub, rg, request.path_params["ws"])
        if (name, version) not in ws.codes:
            raise Refused(404, "UserError", f"code asset {name}:{version} not found in workspace {ws.ws}")
        return arm("codes", version, {"codeUri": f"{base_url}/_code/{name}/{version}", "isAnonymous": False,
                                      "isArchived": False, "properties": {}, "tags": {}},
                   f"{ws.arm_id}/codes/{name}/versions/{version}")

    @app.get(_WS + "/environments/{name}/versions/{version}")
    def environment(sub: str, rg: str, name: str, version: str, request: Request):
        scope(sub, rg, request.path_params["ws"])
        if (name, version) not in ws.environments:
            raise Refused(404, "UserError", f"environment {name}:{version} not found in workspace {ws.ws}")
        return arm("environments", version, {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
                                             "osType": "Linux", "isAnonymous": False, "isArchived": False,
                                             "properties": {}, "tags": {}},
                   f"{ws.arm_id}/environments/{name}/versions/{version}")

    # --- jobs -------------------------------------------------------------------------

    @app.put(_WS + "/jobs/{name}")
    async def put_job(sub: str, rg: str, name: str, request: Request):
        scope(sub, rg, request.path_params["ws"])
        job = ws.create_job(name, await request.json(), base_url)
        cluster.start(job)
        return JSONResponse(job.body, status_code=201)

    @app.get(_WS + "/jobs/{name}")
    def get_job(sub: str, rg: str, name: str, request: Request):
        scope(sub, rg, request.path_params["ws"])
        job = ws.job(name)
        with ws.lock:
            return json.loads(json.dumps(job.body))

    @app.post(_WS + "/jobs/{name}/cancel")
    def cancel_job(sub: str, rg: str, name: str, request: Request):
        scope(sub, rg, request.path_params["ws"])
        cluster.cancel(ws.job(name))
        poll = (f"{base_url}/subscriptions/{ws.sub}/providers/Microsoft.MachineLearningServices/locations/"
                f"{location}/mfeOperationResults/jobs:{name}?api-version=2024-04-01")
        return Response(status_code=202, headers={"Location": poll, "Retry-After": "1"})

    @app.get("/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{loc}/"
             "mfeOperationResults/jobs:{name}")
    def cancel_result(sub: str, loc: str, name: str):
        job = ws.job(name)
        if job.status in TERMINAL:
            return Response(status_code=200)
        return Response(status_code=202, headers={"Retry-After": "1", "Location": f"{base_url}/subscriptions/{sub}/"
                        f"providers/Microsoft.MachineLearningServices/locations/{loc}/mfeOperationResults/jobs:{name}"})

    @app.get("/_discovery")
    def discovery():
        """The workspace's service discovery (``discoveryUrl``): every data-plane service is this emulator, which
        serves none of them, so calls such as ``jobs.download``'s run history end in a 404 naming the path."""
        return {k: base_url for k in ("api", "catalog", "experimentation", "gallery", "history", "hyperdrive",
                                      "labeling", "modelmanagement", "pipelines", "studiocoreservices")}

    # --- controls ---------------------------------------------------------------------

    @app.get("/_emulator/health")
    def health():
        return {"ok": True, "workspace": ws.arm_id}

    @app.get("/_emulator/ledger")
    def ledger():
        return ws.ledger()

    @app.post("/_emulator/faults")
    async def faults(request: Request):
        ws.add_fault(await request.json())
        return {"ok": True, "http_faults": len(ws.http_faults), "job_faults": len(ws.job_faults)}

    @app.post("/_emulator/reset")
    def reset():
        with ws.lock:
            jobs = list(ws.jobs.values())
            for job in jobs:
                cluster.cancel(job)
        end = time.time() + 15  # let cancelled jobs stop (and write their outputs back) before forgetting them
        while time.time() < end and any(j.status not in TERMINAL for j in jobs):
            time.sleep(0.05)
        with ws.lock:
            ws.jobs.clear(), ws.http_faults.clear(), ws.job_faults.clear()
        return {"ok": True, "still_live": [j.name for j in jobs if j.status not in TERMINAL]}

    @app.get("/_emulator/jobs/{name}/log")
    def job_log(name: str):
        return PlainTextResponse(ws.job(name).log)

    @app.api_route("/{path:path}", methods=["GET", "PUT", "POST", "DELETE", "PATCH"])
    def unknown(path: str, request: Request):
        return _error(404, "NotEmulated", f"{request.method} /{path} is not emulated (see docs/azure_ml.md)")

    return app
