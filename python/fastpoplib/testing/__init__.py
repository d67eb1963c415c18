"""A POP3 server for tests, shipped with fastpoplib.

Use it to test code that reads mail over POP3, with any client (fastpoplib or stdlib poplib)::

    from fastpoplib.testing import POP3TestServer, sample_mailbox

    with POP3TestServer(sample_mailbox(5), users={"alice": "secret"}) as srv:
        ...connect to srv.host, srv.port...

It speaks RFC 1939, 2449, 2595 (STLS), 5034 (SASL) and 6856 (UTF8), records every session,
and misbehaves on demand (:class:`Fault`). With pytest, the fixtures ``pop3_server``,
``pop3_tls_server`` and ``pop3_server_factory`` are available once fastpoplib is installed.
TLS needs ``trustme`` (``pip install 'fastpoplib[testing]'``), imported only when used.
"""

from .certs import TLSCertificates
from .mailbox import Mailbox, Message, sample_mailbox
from .server import MAX_FAULT_SECONDS, SASL_MECHANISMS, Fault, POP3TestServer, SASLQuirks, Session

__all__ = [
    "POP3TestServer",
    "Session",
    "Fault",
    "MAX_FAULT_SECONDS",
    "SASL_MECHANISMS",
    "SASLQuirks",
    "Mailbox",
    "Message",
    "sample_mailbox",
    "TLSCertificates",
]
