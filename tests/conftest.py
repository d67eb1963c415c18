"""Fixtures shared by the test modules (pytest puts this directory on sys.path)."""

from dovecot import dovecot_mail, dovecot_server, dovecot_strict, fresh_user  # noqa: F401
