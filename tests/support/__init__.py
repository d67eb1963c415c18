"""Helpers shared by every test folder: ``clients`` (one scenario on stdlib poplib and on
fastpoplib's blocking and asyncio clients) and ``dovecot`` (private Dovecot instances).
Importable as ``support`` because pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in
pyproject.toml)."""
