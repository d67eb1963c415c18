"""The retriever's destinations beyond local files: an IMAP folder (APPEND, RFC 3501, with
UIDPLUS, MULTIAPPEND and LITERAL+ when offered), an LMTP server (RFC 2033, through
``smtplib.LMTP``) and an MDA program (the message on its standard input).

Each is one class behind the destination interface of :mod:`fastpoplib._store`: a message
counts as stored only on the destination's own confirmation (IMAP's tagged OK, the recipient's
LMTP 250, the MDA's exit status 0), and anything else leaves it on the POP server.

A network destination cannot be searched for the retriever's store keys, so it keeps a
journal beside the account's state: the keys it confirmed (with what the destination said, an
IMAP UID), as long as the engine's state holds them, and, for IMAP, an *intent* written before
each APPEND (the message's SHA-256, size,
Message-ID and the folder's UIDNEXT at that time). A run killed after the server's OK but
before the state was written leaves the intent behind; the next run looks for the message in
the folder (UID SEARCH from that UIDNEXT on, by Message-ID, else by size, then the SHA-256 of
each candidate's BODY.PEEK[]) and counts it as stored if it is there, byte for byte. No header
is added and no byte is rewritten. LMTP and MDA cannot be asked: a run killed between their
confirmation and the journal write (one message) delivers that message again.

imapclient is imported only when an IMAP destination is opened: it is the ``fastpoplib[imap]``
extra, and ``import fastpoplib`` does not need it.
"""

from .imap import ImapDestination, ImapURL, imap_state_dir, internal_date
from .lmtp import LmtpDestination, lmtp_state_dir, parse_lmtp_target
from .mda import MdaDestination, mda_state_dir
from .remote import DestinationError, Journal

__all__ = [
    "DestinationError",
    "ImapDestination",
    "ImapURL",
    "Journal",
    "LmtpDestination",
    "MdaDestination",
    "imap_state_dir",
    "internal_date",
    "lmtp_state_dir",
    "mda_state_dir",
    "parse_lmtp_target",
]
