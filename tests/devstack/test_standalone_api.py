"""devstack.standalone.AirflowApi against a real HTTP server that answers slowly, then promptly."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.standalone import AirflowApi

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def slow_once():
    """A server on a free port whose first answer to each method takes 1.5 s; returns (port, calls by method)."""
    calls: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            calls[self.command] = calls.get(self.command, 0) + 1
            if calls[self.command] == 1:
                time.sleep(1.5)
            body = json.dumps({"state": "success", "method": self.command}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], calls
    server.shutdown()


def test_a_get_that_times_out_is_asked_again(slow_once):
    port, calls = slow_once
    api = AirflowApi(port, timeout=0.5)
    assert api._request("GET", "/api/v2/dags/d/dagRuns/r", auth=False) == {"state": "success", "method": "GET"}
    assert calls["GET"] == 2


def test_a_post_that_times_out_is_not_sent_twice(slow_once):
    port, calls = slow_once
    api = AirflowApi(port, timeout=0.5)
    with pytest.raises(TimeoutError):
        api._request("POST", "/api/v2/dags/d/dagRuns", {"dag_run_id": "r"}, auth=False)
    time.sleep(1.5)
    assert calls["POST"] == 1


def test_a_port_already_taken_is_refused_at_once_naming_it(tmp_path):
    import socket

    from devstack.standalone import start_standalone

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"port {port} is already in use .*ss -ltnp 'sport = :{port}'"):
            start_standalone({"AIRFLOW_HOME": str(tmp_path)}, port, tmp_path / "standalone.log")
    assert not (tmp_path / "standalone.log").exists()  # refused before migrating or starting anything
