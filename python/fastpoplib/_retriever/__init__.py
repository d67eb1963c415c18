"""The retriever behind ``fastpoplib fetch``, ``ls`` and ``watch``: ``config`` (an account's
settings and secrets), ``engine`` (one account's run: sessions, listing, storing, deleting) and
``report`` (what a run reports: sentences, exit codes). The names other modules use are
re-exported here."""

from .config import Account, ConfigError
from .engine import fetch_account, list_account, state_dir_of
from .report import (
    EXIT_AUTH,
    EXIT_BUSY,
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    Progress,
    Report,
    exit_code,
    printable,
)

__all__ = [
    "EXIT_AUTH",
    "EXIT_BUSY",
    "EXIT_CONNECTION",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "Account",
    "ConfigError",
    "Progress",
    "Report",
    "exit_code",
    "fetch_account",
    "list_account",
    "printable",
    "state_dir_of",
]
