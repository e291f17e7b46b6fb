"""The email channel: plain-text mail over SMTP (optionally STARTTLS, with a private CA, and login)."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from st_pipeline.alerts.errors import AlertDeliveryError
from st_pipeline.alerts.model import AlertMessage
from st_pipeline.redaction import redact, register_secret

SUBJECT_PREFIX = "[st_pipeline]"


class EmailChannel:
    """Sends each message as a plain-text email with subject ``[st_pipeline] <headline>``."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ca_file: str | None = None,
        timeout: float = 10,
    ) -> None:
        if not recipients:
            raise ValueError("an email channel needs at least one recipient")
        if (username is None) != (password is None):
            raise ValueError("SMTP username and password go together")
        if ca_file is not None and not starttls:
            raise ValueError("a CA file is only used with STARTTLS")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.username = username
        self._password = password
        self.starttls = starttls
        self.ca_file = ca_file
        self.timeout = timeout
        register_secret(password)

    @property
    def name(self) -> str:
        """``email (<host>:<port>)``."""
        return f"email ({self.host}:{self.port})"

    def __repr__(self) -> str:
        login = f", username={self.username!r}, password=***" if self.username else ""
        return (
            f"EmailChannel({self.host!r}, {self.port}, sender={self.sender!r}, "
            f"recipients={self.recipients!r}{login}, starttls={self.starttls})"
        )

    def build(self, message: AlertMessage) -> EmailMessage:
        """The email for ``message`` (redacted)."""
        message = message.redacted()
        mail = EmailMessage()
        mail["Subject"] = _one_line(f"{SUBJECT_PREFIX} {message.headline}")
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain="st-pipeline")
        mail.set_content(message.text() + "\n")
        return mail

    def send(self, message: AlertMessage) -> None:
        """Deliver the email; SMTP and socket errors raise ``AlertDeliveryError``."""
        mail = self.build(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    # The system's trusted CAs, or only ``ca_file`` (a relay with a private CA).
                    smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
                if self.username is not None and self._password is not None:
                    smtp.login(self.username, self._password)
                refused = smtp.send_message(mail, from_addr=self.sender, to_addrs=self.recipients)
        except (smtplib.SMTPException, OSError) as exc:
            raise AlertDeliveryError(f"{self.name}: {self._describe(exc)}") from None
        if refused:
            raise AlertDeliveryError(f"{self.name}: recipients refused: {', '.join(sorted(refused))}")

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, smtplib.SMTPResponseException):
            error = exc.smtp_error
            detail = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
            text = f"{type(exc).__name__}: {exc.smtp_code} {detail}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return redact(text, [self._password])


def _one_line(text: str) -> str:
    """Header values must not contain line breaks."""
    return " ".join(text.split())
