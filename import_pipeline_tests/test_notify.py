"""Import notifications, delivered to a real HTTP receiver and a real SMTP server on 127.0.0.1."""

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from aiosmtpd.controller import Controller

from import_pipeline.launch import import_file
from import_pipeline.notify import Notifier
from import_pipeline.sensors import import_failed_sensor, import_succeeded_sensor
from import_pipeline_tests.shared import FILLER, HANDMADE


@pytest.fixture
def webhook() -> Iterator[tuple[str, list]]:
    """A local HTTP receiver that answers 503 once, then records JSON bodies."""
    received, calls = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            calls.append(1)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if len(calls) == 1:
                self.send_response(503)
            else:
                received.append(json.loads(body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


@pytest.fixture
def mailbox() -> Iterator[tuple[int, list]]:
    """A local SMTP server that keeps every message it receives."""
    messages = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            messages.append(envelope.content.decode())
            return "250 OK"

    # The controller checks readiness by connecting to its port, so it needs a real one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, messages
    controller.stop()


def _run_event(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> dg.DagsterEvent:
    return instance.get_records_for_run(run_id, of_type=event_type).records[-1].event_log_entry.dagster_event


def test_notify_success_reaches_webhook_and_email(pipeline, tmp_path, webhook, mailbox):
    url, received = webhook
    port, messages = mailbox
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    result = import_file(path)
    run = pipeline.instance.get_run_by_id(result["run_id"])
    notifier = Notifier(
        webhook_url=url, smtp_host="127.0.0.1", smtp_port=port, smtp_to="ops@example.com", webhook_retry_pause_s=0.01
    )
    context = dg.build_run_status_sensor_context(
        sensor_name=import_succeeded_sensor.name,
        dagster_event=_run_event(pipeline.instance, run.run_id, dg.DagsterEventType.RUN_SUCCESS),
        dagster_instance=pipeline.instance,
        dagster_run=run,
        resources={"notifier": notifier},
    )

    import_succeeded_sensor(context)

    assert len(received) == 1, "the webhook answered 503 once and was retried"
    body = received[0]
    assert body["event"] == "import succeeded"
    assert (body["run_id"], body["status"], body["inserted"], body["rows_rejected"]) == (
        run.run_id,
        "success",
        5 + FILLER,
        5,
    )
    assert body["link"] == f"http://127.0.0.1:3000/runs/{run.run_id}"
    assert len(messages) == 1
    assert f"Subject: [import-pipeline] import succeeded: {result['partition_key']}" in messages[0]
    assert f"inserted: {5 + FILLER}" in messages[0]


def test_notify_failure_carries_the_error(pipeline, tmp_path, webhook):
    url, received = webhook
    path = tmp_path / "contacts.csv"
    path.write_text("Name,Email\nAnn,ann@x.com\n")
    result = import_file(path)
    run = pipeline.instance.get_run_by_id(result["run_id"])
    context = dg.build_run_status_sensor_context(
        sensor_name=import_failed_sensor.name,
        dagster_event=_run_event(pipeline.instance, run.run_id, dg.DagsterEventType.RUN_FAILURE),
        dagster_instance=pipeline.instance,
        dagster_run=run,
        resources={"notifier": Notifier(webhook_url=url)},
    ).for_run_failure()

    import_failed_sensor(context)

    assert [(b["event"], b["status"]) for b in received] == [("import failed", "failed")]
    assert (
        received[0]["error"] == "contacts.csv: no column maps to company_name; the headers found are ['Name', 'Email']"
    )


def test_notify_unreachable_webhook_gives_up_without_raising():
    notifier = Notifier(webhook_url="http://127.0.0.1:9/nothing-listens-here", webhook_retry_pause_s=0.01)
    outcome = notifier.send("import failed", {"run_id": "r1", "partition_key": "p"}, dg.get_dagster_logger())
    assert outcome == {"log": "sent", "webhook": "failed"}
