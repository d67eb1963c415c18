"""Fixtures shared by every test folder.

``kind`` runs a test once per fastpoplib client (``[sync]``: POP3, ``[async]``: AsyncPOP3
through ``support.clients``' blocking adapter); ``any_kind`` also on stdlib poplib
(``[stdlib]``), the reference a drop-in must match. A test that needs only some pairings
(say, no stdlib on rustls) parametrizes ``kind`` itself, which overrides the fixture.
"""

from __future__ import annotations

import pytest

from support.clients import FAST_KINDS, KINDS
from support.dovecot import dovecot_mail, dovecot_server, dovecot_strict, fresh_user  # noqa: F401


@pytest.fixture(params=FAST_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """``"sync"`` or ``"async"``: each fastpoplib client, for ``support.clients.connect``."""
    return request.param


@pytest.fixture(params=KINDS)
def any_kind(request: pytest.FixtureRequest) -> str:
    """``"stdlib"``, ``"sync"`` or ``"async"``: poplib and each fastpoplib client."""
    return request.param
