"""A private, unprivileged Dovecot (a real POP3 server, and on request the IMAP and LMTP
servers the retriever delivers to) on loopback high ports, with Maildir mailboxes generated
here: for tests against a real server (fastpoplib's interop suite and benchmarks use it).
Needs Dovecot installed (``dovecot-core dovecot-pop3d``, plus ``dovecot-imapd`` and
``dovecot-lmtpd`` for those protocols), root (mail is owned by ``nobody``) and trustme;
``root`` must be readable by unprivileged processes.

    with Dovecot(tmp_dir) as dove:
        dove.add_user("basic", messages)          # list of raw messages (bytes, CRLF)
        poplib.POP3(dove.host, dove.plain_port)   # STLS offered; implicit TLS on dove.tls_port

    with Dovecot(tmp_dir, protocols=("pop3", "imap", "lmtp")) as dove:
        dove.add_user("dest", [], quota="100K")    # IMAP on dove.imap_port (STARTTLS) and
                                                  # dove.imaps_port, LMTP on dove.lmtp_port
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Iterable, List, Optional

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
PASSWORD = "pop-test-pw"
MAIL_UID = 65534  # nobody: Dovecot refuses uid 0 for mail access


def installed() -> bool:
    """Whether the ``dovecot`` and ``doveadm`` programs are there to run."""
    return os.access(DOVECOT, os.X_OK) and os.access(DOVEADM, os.X_OK)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = fastpoplib-test-{plain_port}
log_path = {root}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {uid}
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users.passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users.passwd
}}
mail_location = maildir:~/Maildir
mail_fsync = never
pop3_uidl_format = %08Xu%08Xv
mail_max_userip_connections = 1000
service pop3-login {{
  inet_listener pop3 {{
    port = {plain_port}
  }}
  inet_listener pop3s {{
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
default_internal_user = nobody
default_login_user = nobody
"""

# The destinations' side: IMAP and LMTP listeners, and the quota plugin (a user's limit is the
# userdb field quota_rule, set by add_user(quota=...)); a full mailbox makes LMTP answer 4xx.
IMAP_CONFIG = """
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
"""
LMTP_CONFIG = """
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
protocol lmtp {{
  auth_username_format = %Ln
}}
postmaster_address = postmaster@example.org
"""
QUOTA_CONFIG = """
mail_plugins = $mail_plugins quota
quota_full_tempfail = yes
plugin {
  quota = maildir:User quota
}
"""


# XOAUTH2 and OAUTHBEARER checked by Dovecot's oauth2 passdb, which asks an authorization
# server's introspection endpoint (RFC 7662) about each token; after the passwd-file passdb,
# which refuses a token as a password and lets the next passdb decide.
OAUTH2_CONFIG = """\
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop xoauth2 oauthbearer
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/dovecot-oauth2.conf.ext
}}
"""

OAUTH2_PASSDB = """\
introspection_mode = post
introspection_url = {introspection_url}
username_attribute = username
active_attribute = active
active_value = true
"""


class Dovecot:
    """Starts Dovecot from a generated config under ``root``; ``stop()`` (or leaving the
    ``with`` block) stops it. The TLS certificate comes from trustme: trust ``cafile``.
    With ``oauth2_introspection_url`` (``http://client:secret@127.0.0.1:port/introspect``, as
    :class:`~fastpoplib.testing.oauth_server.OAuth2TestServer` serves it), XOAUTH2 and
    OAUTHBEARER are offered too and each token is checked there."""

    host = "127.0.0.1"

    def __init__(self, root: Path, protocols: Iterable[str] = ("pop3",), oauth2_introspection_url: Optional[str] = None) -> None:
        import trustme

        self.root: Path = Path(root)
        self.protocols = tuple(protocols)
        self.plain_port: int = _free_port()
        self.tls_port: int = _free_port()
        self.imap_port: int = _free_port()
        self.imaps_port: int = _free_port()
        self.lmtp_port: int = _free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self._ca = trustme.CA()
        leaf = self._ca.issue_cert("127.0.0.1", "localhost")
        leaf.private_key_pem.write_to_path(str(self.root / "key.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(self.root / "cert.pem"))
        self.cafile: str = str(self.root / "ca.pem")
        self._ca.cert_pem.write_to_path(self.cafile)
        (self.root / "users.passwd").write_text("")
        self.conf: Path = self.root / "dovecot.conf"
        config = CONFIG.format(
            root=self.root, plain_port=self.plain_port, tls_port=self.tls_port, uid=MAIL_UID, protocols=" ".join(self.protocols)
        )
        if "imap" in self.protocols:
            config += IMAP_CONFIG.format(imap_port=self.imap_port, imaps_port=self.imaps_port)
        if "lmtp" in self.protocols:
            config += LMTP_CONFIG.format(lmtp_port=self.lmtp_port)
        if "imap" in self.protocols or "lmtp" in self.protocols:
            config += QUOTA_CONFIG
        if oauth2_introspection_url is not None:
            # Read by the auth process (user nobody); the URL holds only the test server's
            # introspection client.
            (self.root / "dovecot-oauth2.conf.ext").write_text(OAUTH2_PASSDB.format(introspection_url=oauth2_introspection_url))
            config += OAUTH2_CONFIG.format(root=self.root)
        self.conf.write_text(config)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this instance's certificate (hostname checks on)."""
        return ssl.create_default_context(cafile=self.cafile)

    def add_user(self, name: str, messages: Iterable[bytes], quota: Optional[str] = None) -> List[bytes]:
        """Creates ``name`` (password :data:`PASSWORD`) with these messages, in order; returns
        them as stored (CRLF line ends). ``quota`` (e.g. ``"100K"``) limits the mailbox's
        storage, with the IMAP or LMTP protocols. Dovecot re-reads the passwd-file: no restart."""
        home = self.root / "mail" / name
        cur = home / "Maildir" / "cur"
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        stored = []
        for i, raw in enumerate(messages):
            data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            # S= and W= let Dovecot size messages without reading them (CRLF stored: equal).
            (cur / f"{1700000000 + i}.M{i}P1.fastpoplib,S={len(data)},W={len(data)}:2,").write_bytes(data)
            stored.append(data)
        for path in [home, *home.rglob("*")]:
            os.chown(path, MAIL_UID, MAIL_UID)
        self._add_passwd(name, home, quota)
        return stored

    def _add_passwd(self, name: str, home: Path, quota: Optional[str]) -> None:
        extra = f"userdb_quota_rule=*:storage={quota}" if quota else ""
        with open(self.root / "users.passwd", "a") as f:
            f.write(f"{name}:{{PLAIN}}{PASSWORD}:{MAIL_UID}:{MAIL_UID}::{home}::{extra}\n")

    def start(self) -> "Dovecot":
        """Start Dovecot and wait until it greets on :attr:`plain_port`; returns ``self``."""
        for sub in ("run", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        # Dovecot daemonizes and its children inherit our descriptors: no pipes here, or
        # run() would wait for them to close.
        with open(self.root / "start.log", "wb") as out:
            subprocess.run([DOVECOT, "-c", str(self.conf)], check=True, stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.plain_port), timeout=1) as s:
                    if s.recv(100).startswith(b"+OK"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Dovecot did not start; log:\n{self.log()}")

    def log(self) -> str:
        """Dovecot's log so far (empty before anything was logged)."""
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop Dovecot (``doveadm stop``) and wait up to 10 s for its master process to exit."""
        subprocess.run([DOVEADM, "-c", str(self.conf), "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        pid_file = self.root / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
