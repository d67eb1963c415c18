"""What the command line checks before it connects: the file descriptor limit against the
accounts actually polled at once, and account names that must tell accounts apart."""

from __future__ import annotations

import resource
from pathlib import Path

from support.cli import account, cli


def _limit(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def test_one_account_is_not_refused_for_the_default_concurrency(tmp_path: Path, pop3_server: object) -> None:
    """``--concurrency 32`` bounds how many accounts run at once; one account needs one slot,
    so a low descriptor limit (macOS's 256) must not refuse it."""
    out = cli("fetch", *account(pop3_server), "--maildir", str(tmp_path / "m"), preexec_fn=lambda: _limit(200))
    assert out.returncode == 0, out.stderr


def test_a_limit_too_low_for_one_account_says_raise_it_not_lower_concurrency(tmp_path: Path, pop3_server: object) -> None:
    out = cli(
        "fetch", *account(pop3_server), "--maildir", str(tmp_path / "m"), "--concurrency", "1", preexec_fn=lambda: _limit(40)
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "raise the limit to" in out.stderr and "lower --concurrency" not in out.stderr, out.stderr


def test_two_accounts_with_one_name_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text(
        '[[account]]\nname = "one"\nhost = "127.0.0.1"\nuser = "a"\n\n'
        '[[account]]\nname = "one"\nhost = "127.0.0.1"\nuser = "b"\n'
    )
    out = cli("fetch", "--config", str(config), "--maildir", str(tmp_path / "m"))
    assert out.returncode == 2 and "two accounts are named 'one'" in out.stderr, out.stderr


def test_accounts_at_once_over_the_limit_are_told_the_concurrency_that_fits(tmp_path: Path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text("".join(f'[[account]]\nname = "a{i}"\nhost = "127.0.0.1"\nuser = "u{i}"\n\n' for i in range(3)))
    # One account needs about 88 descriptors, two about 112 (FDS_RESERVED + FDS_PER_ACCOUNT each).
    out = cli("fetch", "--config", str(config), "--maildir", str(tmp_path / "m"), preexec_fn=lambda: _limit(100))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "polling 3 account(s) at once" in out.stderr and "lower --concurrency to 1" in out.stderr, out.stderr
