"""Notify: tell people when an import succeeds or fails: a structured log line, a webhook, an email."""

import json
import logging
import smtplib
import time
import urllib.error
import urllib.request
from email.message import EmailMessage

import dagster as dg

WEBHOOK_ATTEMPTS = 3


class Notifier(dg.ConfigurableResource):
    """Where import notifications go; every channel but the log line is optional."""

    ui_url: str = "http://127.0.0.1:3000"
    webhook_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "import-pipeline@localhost"
    smtp_to: str = ""
    # Doubles after each failed attempt: 1 s, 2 s by default.
    webhook_retry_pause_s: float = 1.0

    def run_link(self, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    def send(self, event: str, summary: dict, log: logging.Logger) -> dict:
        """Send one notification on every configured channel; return what each channel did."""
        body = {"event": event, "link": self.run_link(summary["run_id"]), **summary}
        log.info(json.dumps(body, default=str))
        outcome = {"log": "sent"}
        if self.webhook_url:
            outcome["webhook"] = self._post(body, log)
        if self.smtp_host and self.smtp_to:
            outcome["email"] = self._mail(event, body, log)
        return outcome

    def _post(self, body: dict, log: logging.Logger) -> str:
        data = json.dumps(body, default=str).encode()
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            request = urllib.request.Request(self.webhook_url, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return f"sent ({response.status})"
            except (urllib.error.URLError, TimeoutError) as e:
                log.warning(f"webhook attempt {attempt} of {WEBHOOK_ATTEMPTS} failed: {e}")
                if attempt < WEBHOOK_ATTEMPTS:
                    time.sleep(self.webhook_retry_pause_s * 2 ** (attempt - 1))
        return "failed"

    def _mail(self, event: str, body: dict, log: logging.Logger) -> str:
        message = EmailMessage()
        message["Subject"] = f"[import-pipeline] {event}: {body.get('partition_key')}"
        message["From"] = self.smtp_from
        message["To"] = self.smtp_to
        lines = [f"{k}: {v}" for k, v in body.items() if k not in ("event",)]
        message.set_content("\n".join(lines))
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=10) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as e:
            log.warning(f"email to {self.smtp_to} failed: {e}")
            return "failed"
        return "sent"
