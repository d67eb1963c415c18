"""``fastpoplib`` command line: fetch, ls, serve, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import _retriever
from ._retriever import EXIT_OK, EXIT_USAGE, Account, ConfigError

DEFAULT_MAILDIR = Path("~/Maildir").expanduser()


def _load_toml(path: str) -> Dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - depends on the Python version
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError("reading a TOML config needs Python 3.11+ or `pip install tomli`") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None


_ACCOUNT_KEYS = set(Account.__dataclass_fields__)


def accounts_from(args: argparse.Namespace) -> List[Account]:
    """Accounts from ``--config`` (every ``[[account]]`` table, defaults from ``[defaults]``)
    or from the command-line options; command-line options override the file."""
    cli = {k: v for k, v in vars(args).items() if k in _ACCOUNT_KEYS and v not in (None, False)}
    if args.config:
        data = _load_toml(args.config)
        defaults = data.get("defaults", {})
        tables = data.get("account", [])
        if not tables:
            raise ConfigError(f"{args.config} has no [[account]] table")
        accounts = []
        for table in tables:
            merged = {**defaults, **table, **cli}
            unknown = set(merged) - _ACCOUNT_KEYS
            if unknown:
                raise ConfigError(f"unknown account setting(s): {', '.join(sorted(unknown))}")
            if args.account and merged.get("name") not in args.account:
                continue
            accounts.append(_account(merged))
        return accounts
    if not cli.get("host") or not cli.get("user"):
        raise ConfigError("give --host and --user, or --config FILE")
    return [_account(cli)]


def _account(settings: Dict[str, Any]) -> Account:
    try:
        return Account(**settings)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


class _TqdmProgress(_retriever.Progress):
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def expect(self, nbytes: int) -> None:
        self.bar.total = (self.bar.total or 0) + nbytes
        self.bar.refresh()

    def advance(self, nbytes: int) -> None:
        self.bar.update(nbytes)


def _progress(quiet: bool) -> _retriever.Progress:
    """A tqdm bar when tqdm is installed and stderr is a terminal; else silence."""
    if quiet or not sys.stderr.isatty():
        return _retriever.Progress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _retriever.Progress()
    return _TqdmProgress(tqdm(total=0, unit="B", unit_scale=True, desc="fetching", file=sys.stderr))


def run_fetch(accounts: List[Account], maildir: Path, quiet: bool) -> int:
    progress = _progress(quiet)
    started = time.monotonic()
    reports = asyncio.run(_retriever.fetch_all(accounts, maildir, progress))
    if isinstance(progress, _TqdmProgress):
        progress.bar.close()
    elapsed = time.monotonic() - started
    for r in reports:
        if r.error:
            print(f"{r.account}: FAILED: {r.error}", file=sys.stderr)
        for w in r.warnings:
            print(f"{r.account}: warning: {w}", file=sys.stderr)
        if not quiet or r.error:
            extra = f", {r.skipped} skipped (too large)" if r.skipped else ""
            extra += f", {r.deleted} deleted on server" if r.deleted else ""
            print(f"{r.account}: {r.fetched} new message(s), {r.bytes} bytes -> {r.stored_dir}{extra}")
    if not quiet:
        print(f"done in {elapsed:.2f} s")
    return _retriever.exit_code(reports)


def cmd_fetch(args: argparse.Namespace) -> int:
    return run_fetch(accounts_from(args), Path(args.maildir or DEFAULT_MAILDIR).expanduser(), args.quiet)


def cmd_ls(args: argparse.Namespace) -> int:
    accounts = accounts_from(args)
    rows = asyncio.run(_list(accounts[0]))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        for r in rows:
            print(f"{r['number']:>5} {r['size']:>9} {r['uid'] or '-':<24} {r['date'][:31]:<31} {r['from'][:30]:<30} {r['subject']}")
    return EXIT_OK


async def _list(acct: Account) -> List[Dict[str, Any]]:
    from email.parser import BytesHeaderParser
    from email.policy import default

    pop = await _retriever._open(acct)
    try:
        await pop.login(acct.user, allow_insecure=acct.insecure, **acct.secret())
        infos = {info.number: info for info in await pop.messages()}
        parser = BytesHeaderParser(policy=default)
        rows = []
        async for number, (_, lines, _) in pop.top_many(list(infos), 0):
            info = infos[number]
            headers = parser.parsebytes(b"\r\n".join(lines) + b"\r\n")
            rows.append(
                {
                    "number": number,
                    "size": info.size,
                    "uid": info.uid,
                    "date": str(headers.get("Date", "")),
                    "from": str(headers.get("From", "")),
                    "subject": str(headers.get("Subject", "")),
                }
            )
        await pop.quit()
        return rows
    except BaseException:
        pop._abort()
        raise


def _serve_server(args: argparse.Namespace) -> Any:
    from .testing import POP3TestServer, sample_mailbox

    return POP3TestServer(
        mailbox=sample_mailbox(args.messages, seed=args.seed),
        users={args.user: args.password},
        host=args.host,
        port=args.port,
        stls=False,
        allow_concurrent=True,  # a demo server: any number of sessions may open the maildrop
    )


def cmd_serve(args: argparse.Namespace) -> int:
    with _serve_server(args) as srv:
        print(f"POP3 test server on {srv.host}:{srv.port}, user {args.user!r} password {args.password!r} (Ctrl-C stops)", flush=True)
        try:
            deadline = time.monotonic() + args.seconds if args.seconds else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """The built-in server with a sample mailbox, fetched by the real `fetch` path."""
    from .testing import POP3TestServer, sample_mailbox

    maildir = Path(args.maildir) if args.maildir else Path(tempfile.mkdtemp(prefix="fastpoplib-demo-")) / "Maildir"
    os.environ["FASTPOPLIB_DEMO_PASSWORD"] = "demo-password"
    with POP3TestServer(mailbox=sample_mailbox(args.messages), users={"demo": "demo-password"}, stls=False) as srv:
        print(f"demo: built-in POP3 server on {srv.host}:{srv.port} with {args.messages} sample messages")
        acct = Account(
            host=srv.host, port=srv.port, user="demo", tls="none", insecure=True,
            password_env="FASTPOPLIB_DEMO_PASSWORD", maildir=str(maildir), timeout=10,
        )
        print("demo: fastpoplib fetch (first run)")
        code = run_fetch([acct], maildir, quiet=False)
        print("demo: fastpoplib fetch (second run: nothing new)")
        code = code or run_fetch([acct], maildir, quiet=False)
        print("demo: fastpoplib ls")
        for r in asyncio.run(_list(acct))[: args.show]:
            print(f"  {r['number']:>3} {r['size']:>7}  {r['from'][:28]:<28} {r['subject'][:40]}")
    print(f"demo: {sum(1 for _ in (maildir / 'new').iterdir())} messages in {maildir}")
    return code


def _add_account_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("account (or use --config)")
    g.add_argument("--config", help="TOML file with [[account]] tables")
    g.add_argument("--account", action="append", help="only the config account(s) with this name")
    g.add_argument("--host")
    g.add_argument("--port", type=int)
    g.add_argument("--user")
    g.add_argument("--tls", choices=["implicit", "starttls", "none"], help="default implicit (port 995)")
    g.add_argument("--insecure", action="store_true", help="allow --tls none (password in clear text)")
    g.add_argument("--cafile", help="PEM file of CAs to trust (private CA)")
    g.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    g.add_argument("--password-command", metavar="CMD", help="run CMD, use the first line it prints")
    g.add_argument("--netrc-file", metavar="FILE", help="netrc file (default ~/.netrc)")
    g.add_argument("--oauth2-token-command", metavar="CMD", help="run CMD for an OAuth2 token (XOAUTH2/OAUTHBEARER)")
    g.add_argument("--timeout", type=float)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fastpoplib", description="POP3 retriever that never loses or duplicates mail")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="download new messages into a Maildir (default) or mbox")
    _add_account_options(fetch)
    fetch.add_argument("--maildir", help=f"destination Maildir (default {DEFAULT_MAILDIR})")
    fetch.add_argument("--mbox", help="append to this mbox file instead")
    fetch.add_argument("--delete", action="store_true", help="delete on the server once stored locally")
    fetch.add_argument("--max-size", type=int, metavar="BYTES", help="skip larger messages")
    fetch.add_argument("--max-messages", type=int, metavar="N", help="fetch at most N per account")
    fetch.add_argument("-q", "--quiet", action="store_true")
    fetch.set_defaults(func=cmd_fetch)

    ls = sub.add_parser("ls", help="list messages: number, size, UID, date, from, subject")
    _add_account_options(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    for name, func, helptext in (("serve", cmd_serve, "run the built-in test server"), ("demo", cmd_demo, "fetch a sample mailbox from the built-in server")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--messages", type=int, default=12)
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=func)
        if name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=1110)
            p.add_argument("--user", default="user")
            p.add_argument("--password", default="password")
            p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
        else:
            p.add_argument("--maildir", help="where to store (default: a new temporary folder)")
            p.add_argument("--show", type=int, default=12, help="listing lines to show")

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fastpoplib: {exc}", file=sys.stderr)
        return EXIT_USAGE
