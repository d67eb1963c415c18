"""A threaded POP3 server for tests, with fault injection.

It implements the server side of RFC 1939 (POP3), RFC 2449 (CAPA, RESP-CODES, PIPELINING,
LOGIN-DELAY, EXPIRE), RFC 2595 (STLS), RFC 5034 (SASL AUTH: PLAIN, LOGIN, CRAM-MD5, XOAUTH2,
OAUTHBEARER, SCRAM-SHA-1/-256/-512) and RFC 6856 (UTF8) on its own, sharing no code with the
client, so each checks the other. It binds loopback addresses only.

Example::

    from fastpoplib.testing import POP3TestServer, Fault
    import poplib

    with POP3TestServer(users={"alice": "secret"}) as srv:
        srv.add_fault(Fault.stall(0.5, on="RETR"))
        p = poplib.POP3(srv.host, srv.port, timeout=5)
        p.user("alice"); p.pass_("secret")
        print(p.stat())
        p.quit()
    assert srv.sessions[0].quit_received

Every stall, drip and endless stream is bounded by :data:`MAX_FAULT_SECONDS`, threads are
daemons, and :meth:`POP3TestServer.stop` closes every connection, so a test cannot hang on it.
"""

from ._controller import POP3TestServer, Session
from ._faults import MAX_FAULT_SECONDS, Fault
from ._sasl import SASL_MECHANISMS, SASLQuirks

__all__ = ["POP3TestServer", "Session", "Fault", "MAX_FAULT_SECONDS", "SASL_MECHANISMS", "SASLQuirks"]

# The public path, in help(), reprs and pickles, is this package's, not its private modules'.
for _public in (POP3TestServer, Session, Fault, SASLQuirks):
    _public.__module__ = __name__
del _public
