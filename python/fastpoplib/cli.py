"""``fastpoplib`` command line: fetch, watch, status, ls, auth, serve, demo."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from . import __version__, _auth_cli, _retriever, _watch
from ._progress import TerminalProgress
from ._retriever import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Account, ConfigError, printable

DEFAULT_MAILDIR = Path("~/Maildir").expanduser()

EXIT_CODES = """exit codes:
  0    every account fine
  1    partial failure: some accounts or messages failed (the others were fetched)
  2    usage or configuration error (options, config file, password source, store path)
  3    login refused
  4    connection or TLS failure
  5    another fetch of the same account and store is running (see --wait)
  130  interrupted (Ctrl-C): what was stored is recorded, nothing is half-stored"""

_EXIT_MEANING = {
    int(code): text.strip() for code, text in (line.split(None, 1) for line in EXIT_CODES.splitlines()[1:])
}

T = TypeVar("T")


def _load_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - depends on the Python version
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError("reading a TOML config needs Python 3.11+ or `pip install tomli`") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from None


_ACCOUNT_KEYS = {f.name for f in dataclasses.fields(Account) if f.init}


def accounts_from(args: argparse.Namespace) -> list[Account]:
    """Accounts from ``--config`` (every ``[[account]]`` table, defaults from ``[defaults]``)
    or from the command-line options; command-line options override the file."""
    cli = {k: v for k, v in vars(args).items() if k in _ACCOUNT_KEYS and v is not None and v is not False}
    if not args.config:
        if args.account:
            raise ConfigError("--account picks accounts from a --config file; give --config FILE")
        if not cli.get("host") or not cli.get("user"):
            raise ConfigError("give --host and --user, or --config FILE")
        return [Account(**cli)]
    data = _load_toml(args.config)
    defaults = data.get("defaults", {})
    tables = data.get("account", [])
    if not isinstance(defaults, dict) or not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{args.config}: expected a [defaults] table and [[account]] tables")
    if not tables:
        raise ConfigError(f"{args.config} has no [[account]] table")
    accounts = []
    for i, table in enumerate(tables, 1):
        merged = {**defaults, **table, **cli}
        unknown = set(merged) - _ACCOUNT_KEYS
        if unknown:
            raise ConfigError(f"{args.config}: unknown account setting(s): {', '.join(sorted(unknown))}")
        label = repr(table.get("name", i))
        for key in ("host", "user"):
            if key not in merged:
                raise ConfigError(f"{args.config}: account {label} has no {key}")
        try:
            accounts.append(Account(**merged))
        except ConfigError as exc:
            raise ConfigError(f"{args.config}: account {label}: {exc}") from None
    seen: set[str] = set()
    for acct in accounts:
        if acct.name in seen:
            # Status records, OAuth2 tokens and --account pick accounts by name.
            raise ConfigError(f"{args.config}: two accounts are named {acct.name!r}; give each [[account]] its own name")
        seen.add(acct.name)
    if args.account:
        names = {a.name for a in accounts}
        missing = [n for n in args.account if n not in names]
        if missing:
            raise ConfigError(
                f"no account named {', '.join(map(repr, missing))} in {args.config}; its accounts: {', '.join(sorted(names))}"
            )
        accounts = [a for a in accounts if a.name in args.account]
    return accounts


def _ask_passwords(accounts: list[Account]) -> None:
    """On a terminal, ask (without echo) for the password of each account that has no other
    source; elsewhere the account fails with a sentence naming the options that give one."""
    if not sys.stdin.isatty():
        return
    for acct in accounts:
        if acct.has_secret_source():
            continue
        try:
            typed = getpass.getpass(f"Password for {printable(acct.label)}: ")
        except EOFError:
            typed = ""
        if not typed:
            raise ConfigError(f"no password typed for {printable(acct.label)}")
        acct.typed_password = typed


class _NoPasswordOption(argparse.Action):
    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigError(
            "there is no --password option (a password on the command line is visible to other users);"
            " run fastpoplib on a terminal to be asked for it, or give --password-env VAR,"
            " --password-command CMD or a netrc entry"
        )


def _progress(quiet: bool) -> _retriever.Progress:
    """The progress line when stderr is a terminal and not ``--quiet``; else silence."""
    if quiet or not sys.stderr.isatty():
        return _retriever.Progress()
    return TerminalProgress(sys.stderr)


def _run(coro: Awaitable[T], stop_on: tuple[signal.Signals, ...] = (signal.SIGINT,)) -> T | None:
    """Run ``coro``; Ctrl-C (or another of ``stop_on``) cancels it (each account then closes
    its connection and saves its state) and returns None. Cancelling instead of raising
    KeyboardInterrupt at a random point is what keeps an interrupted run from leaving
    anything half-done."""

    async def main() -> T | None:
        task = asyncio.current_task()
        assert task is not None
        interrupted = threading.Event()

        def on_sigint() -> None:
            interrupted.set()
            task.cancel()

        loop = asyncio.get_running_loop()
        for signum in stop_on:
            loop.add_signal_handler(signum, on_sigint)
        try:
            return await coro
        except asyncio.CancelledError:
            if interrupted.is_set():
                return None
            raise
        finally:
            for signum in stop_on:
                loop.remove_signal_handler(signum)

    return asyncio.run(main())


def run_fetch(accounts: list[Account], maildir: Path, quiet: bool, concurrency: int = _watch.DEFAULT_CONCURRENCY) -> int:
    _watch.check_concurrency(concurrency, len(accounts))
    progress = _progress(quiet)
    started = time.monotonic()
    try:
        reports = _run(_watch.fetch_all(accounts, maildir, progress, concurrency))
    finally:
        if isinstance(progress, TerminalProgress):
            progress.close()
    if reports is None:
        print("fastpoplib: interrupted; what was stored is recorded, run fetch again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    elapsed = time.monotonic() - started
    for r in reports:
        name = printable(r.account)
        if r.error:
            print(f"{name}: FAILED: {printable(r.error)}", file=sys.stderr)
        for text in r.warnings:
            print(f"{name}: warning: {printable(text)}", file=sys.stderr)
        for text in r.problems:
            print(f"{name}: {printable(text)}", file=sys.stderr)
        if not quiet and not r.error:  # a failed account gets its error only, no summary
            extra = f", {r.skipped} skipped (too large)" if r.skipped else ""
            extra += f", {r.deleted} deleted on server" if r.deleted else ""
            print(f"{name}: {r.fetched} new message(s), {r.bytes} bytes -> {printable(r.stored_dir)}{extra}")
    code = _retriever.exit_code(reports)
    if code != EXIT_OK:
        _say_exit_code(code)
    elif not quiet:
        print(f"done in {elapsed:.2f} s")
    return code


def _say_exit_code(code: int) -> int:
    """A failed run ends with its exit code and what it means (stderr), not a summary."""
    print(f"fastpoplib: exit code {code}: {_EXIT_MEANING[code]}", file=sys.stderr)
    return code


def cmd_fetch(args: argparse.Namespace) -> int:
    accounts = accounts_from(args)
    _ask_passwords(accounts)
    return run_fetch(accounts, Path(args.maildir or DEFAULT_MAILDIR).expanduser(), args.quiet, args.concurrency)


def cmd_watch(args: argparse.Namespace) -> int:
    # Stopped before it polls (a service manager's stop right after its start): nothing begun,
    # so the same clean exit as later; the event loop's own handler replaces this one.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_OK))
    accounts = accounts_from(args)
    _ask_passwords(accounts)
    _watch.check_concurrency(args.concurrency, len(accounts))
    log = logging.getLogger("fastpoplib.watch")
    if not args.verbose:  # a service: one line per account and poll for the journal, and warnings
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
        log.setLevel(logging.INFO)
    log.info("watching %d account(s), at most %d at once", len(accounts), args.concurrency)
    maildir = Path(args.maildir or DEFAULT_MAILDIR).expanduser()
    _run(_watch.watch(accounts, maildir, args.concurrency), stop_on=(signal.SIGINT, signal.SIGTERM))
    log.info("stopped; what was stored is recorded")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    maildir = Path(args.maildir or DEFAULT_MAILDIR).expanduser()
    accounts = accounts_from(args)
    records = [_watch.status_of(acct, maildir) for acct in accounts]
    sign_ins = [_auth_cli.sign_in_state(acct) for acct in accounts]
    if args.json:  # json escapes control characters itself
        rows = [{**dataclasses.asdict(r), **({"sign_in": s} if s else {})} for r, s in zip(records, sign_ins)]
        json.dump(rows, sys.stdout, indent=2)
        print()
        return EXIT_OK
    for record, sign_in in zip(records, sign_ins):
        print("\n".join(_watch.status_lines(record) + ([f"  sign-in     {printable(sign_in)}"] if sign_in else [])))
    return EXIT_OK


async def _list_all(
    accounts: list[Account], concurrency: int = _watch.DEFAULT_CONCURRENCY
) -> list[tuple[list[dict[str, Any]], _retriever.Report]]:
    return await _watch.each(accounts, _retriever.list_account, concurrency)


def cmd_ls(args: argparse.Namespace) -> int:
    accounts = accounts_from(args)
    _ask_passwords(accounts)
    results = _run(_list_all(accounts, _watch.check_concurrency(args.concurrency, len(accounts))))
    if results is None:
        print("fastpoplib: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_listing(results, args.json)
    for _, report in results:
        for text in report.warnings:
            print(f"{printable(report.account)}: warning: {printable(text)}", file=sys.stderr)
        if report.error:
            print(f"{printable(report.account)}: FAILED: {printable(report.error)}", file=sys.stderr)
    code = _retriever.exit_code([report for _, report in results])
    return _say_exit_code(code) if code != EXIT_OK else code


def _print_listing(results: list[tuple[list[dict[str, Any]], _retriever.Report]], as_json: bool) -> None:
    if as_json:  # json escapes control characters itself
        json.dump([row for rows, _ in results for row in rows], sys.stdout, indent=2)
        print()
        return
    for rows, report in results:
        if len(results) > 1:
            print(f"== {printable(report.account)}")
        for r in rows:
            cells = {k: printable(str(r[k] if r[k] is not None else "-")) for k in ("uid", "date", "from", "subject")}
            print(
                f"{r['number']:>5} {r['size']:>9} {cells['uid']:<24} {cells['date'][:31]:<31} {cells['from'][:30]:<30} {cells['subject']}"
            )


def _serve_server(args: argparse.Namespace) -> Any:
    from .testing import POP3TestServer, sample_mailbox

    return POP3TestServer(
        mailbox=sample_mailbox(args.messages, seed=args.seed),
        users={args.user: args.password},
        host=args.host,
        port=args.port,
        tls=args.tls,
        stls=False,
        allow_concurrent=True,  # a demo server: any number of sessions may open the maildrop
    )


def _check_sample_options(args: argparse.Namespace) -> None:
    if args.messages < 0:
        raise ConfigError(f"--messages must be 0 or more, not {args.messages}")
    if not 0 <= getattr(args, "port", 0) <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535, not {args.port}")


def cmd_serve(args: argparse.Namespace) -> int:
    _check_sample_options(args)
    if args.tls == "implicit":
        from .testing.certs import have_trustme

        if not have_trustme():
            raise ConfigError("serve --tls implicit needs trustme: pip install 'fastpoplib[testing]'")
    try:
        srv = _serve_server(args).start()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port") from None
    try:
        print(f"POP3 test server on {srv.host}:{srv.port}, user {args.user!r} password {args.password!r}", flush=True)
        if args.tls == "implicit":
            print(f"implicit TLS; trust its test CA with --cafile {srv.cafile}", flush=True)
        print("Ctrl-C stops it", flush=True)
        stop = threading.Event()
        try:
            stop.wait(args.seconds if args.seconds else None)
        except KeyboardInterrupt:
            pass
    finally:
        srv.stop()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """The built-in server with a sample mailbox, fetched by the real `fetch` path."""
    from .testing import POP3TestServer, sample_mailbox

    _check_sample_options(args)
    maildir = Path(args.maildir) if args.maildir else Path(tempfile.mkdtemp(prefix="fastpoplib-demo-")) / "Maildir"
    os.environ["FASTPOPLIB_DEMO_PASSWORD"] = "demo-password"
    box = sample_mailbox(args.messages, seed=args.seed)
    with POP3TestServer(mailbox=box, users={"demo": "demo-password"}, stls=False) as srv:
        print(
            f"demo: built-in POP3 server on {srv.host}:{srv.port} with {args.messages} sample messages (seed {args.seed})"
        )
        acct = Account(
            host=srv.host,
            port=srv.port,
            user="demo",
            tls="none",
            insecure=True,
            password_env="FASTPOPLIB_DEMO_PASSWORD",
            maildir=str(maildir),
            timeout=10,
        )
        print("demo: fastpoplib fetch (first run)")
        code = run_fetch([acct], maildir, quiet=False)
        print("demo: fastpoplib fetch (second run: nothing new)")
        code = code or run_fetch([acct], maildir, quiet=False)
        print("demo: fastpoplib ls")
        results = _run(_list_all([acct]))
        for r in (results[0][0] if results else [])[: args.show]:
            print(f"  {r['number']:>3} {r['size']:>7}  {printable(r['from'])[:28]:<28} {printable(r['subject'])[:40]}")
    print(f"demo: {sum(1 for _ in (maildir / 'new').iterdir())} messages in {maildir}")
    return code


def _add_verbose(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default,
        help="log fastpoplib's records to stderr: -v INFO (e.g. what each account fetches), -vv also DEBUG (every"
        " command sent and reply, secrets masked); allowed before or after the command",
    )


def _add_account_options(p: argparse.ArgumentParser) -> None:
    # After the command too (`fetch -v`); SUPPRESS keeps a `-v` given before it.
    _add_verbose(p, argparse.SUPPRESS)
    g = p.add_argument_group("account (or use --config)")
    g.add_argument("--config", metavar="FILE", help="TOML file with [[account]] tables and optional [defaults]")
    g.add_argument(
        "--account", metavar="NAME", action="append", help="only the config account with this name (repeatable)"
    )
    g.add_argument("--host", help="POP3 server name or address")
    g.add_argument("--port", type=int, help="server port, 1-65535 (default 995 with --tls implicit, else 110)")
    g.add_argument("--user", help="login name")
    g.add_argument(
        "--tls",
        choices=["implicit", "starttls", "none"],
        help="implicit: POP3S (default); starttls: STLS on the plain port; none: no TLS (needs --insecure)",
    )
    g.add_argument("--insecure", action="store_true", help="allow --tls none (the password travels in clear text)")
    g.add_argument(
        "--cafile",
        metavar="FILE",
        help="PEM file of CA certificates to trust (a private CA); default: system and bundled roots,"
        " or SSL_CERT_FILE / SSL_CERT_DIR when set",
    )
    g.add_argument(
        "--fingerprint",
        metavar="SHA256:HEX",
        help="accept exactly the server certificate with this SHA-256 fingerprint (e.g. a self-signed one;"
        " a refused certificate's error shows it), instead of verifying it against CAs",
    )
    g.add_argument(
        "--password", nargs="?", action=_NoPasswordOption, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    g.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    g.add_argument("--password-command", metavar="CMD", help="run CMD and use the first line it prints as the password")
    g.add_argument(
        "--netrc-file",
        metavar="FILE",
        help="netrc file to read the password from (default ~/.netrc); with no password source,"
        " fetch and ls ask for it on a terminal (not echoed)",
    )
    g.add_argument(
        "--oauth2-token-command", metavar="CMD", help="run CMD for an OAuth2 access token (XOAUTH2/OAUTHBEARER)"
    )
    g.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="network timeout per operation, in seconds, > 0 (default 60)"
    )


def _add_destination_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("other destinations (one per account, instead of --maildir or --mbox)")
    g.add_argument(
        "--imap",
        metavar="URL",
        help="APPEND to an IMAP folder: imaps://USER@HOST[:PORT]/FOLDER (implicit TLS, port 993) or imap://..."
        " (STARTTLS; without TLS only with --insecure); USER and FOLDER percent-encoded, FOLDER default INBOX,"
        " created if missing; needs pip install 'fastpoplib[imap]'",
    )
    g.add_argument("--imap-password-env", metavar="VAR", help="read the IMAP password from this environment variable")
    g.add_argument("--imap-password-command", metavar="CMD", help="run CMD and use the first line it prints as the IMAP password")
    g.add_argument(
        "--imap-oauth2-token-command",
        metavar="CMD",
        help="run CMD for an OAuth2 access token for IMAP (OAUTHBEARER or XOAUTH2: Gmail, Outlook)",
    )
    g.add_argument("--imap-cafile", metavar="FILE", help="PEM file of CA certificates to trust for the IMAP server")
    g.add_argument("--lmtp", metavar="HOST:PORT", help="deliver over LMTP (RFC 2033) to HOST:PORT or unix:PATH")
    g.add_argument("--lmtp-recipient", metavar="ADDR", help="the LMTP recipient (RCPT TO), required with --lmtp")
    g.add_argument(
        "--mda",
        metavar="CMD",
        help="run CMD for each message, the message on its standard input: exit 0 stored, 75 kept for a later run,"
        " anything else a failed message (kept on the server)",
    )


def _add_config_options(p: argparse.ArgumentParser) -> None:
    _add_verbose(p, argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE", required=True, help="TOML file with [[account]] tables")
    p.add_argument(
        "--account", metavar="NAME", action="append", help="only the config account with this name (repeatable)"
    )


def _add_concurrency(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--concurrency",
        type=int,
        default=_watch.DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"poll at most N accounts at once (default {_watch.DEFAULT_CONCURRENCY}); each holds one connection",
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="fastpoplib",
        description="POP3 mail retriever that never loses or duplicates mail",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"fastpoplib {__version__}")
    _add_verbose(parser, 0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = sub.add_parser(
        "fetch", help="download new messages into a Maildir (default) or mbox", epilog=EXIT_CODES, formatter_class=fmt
    )
    _add_account_options(fetch)
    fetch.add_argument(
        "--maildir", metavar="DIR", help=f"destination Maildir, created 0700 if missing (default {DEFAULT_MAILDIR})"
    )
    fetch.add_argument(
        "--mbox", metavar="FILE", help="append to this mbox file instead (created 0600; locked with fcntl + FILE.lock)"
    )
    _add_destination_options(fetch)
    fetch.add_argument(
        "--delete", action="store_true", help="delete each message on the server once the destination confirmed it"
    )
    fetch.add_argument(
        "--max-size", type=int, metavar="BYTES", help="skip messages larger than BYTES (default: no limit)"
    )
    fetch.add_argument(
        "--max-messages",
        type=int,
        metavar="N",
        help="fetch at most N messages per account and run, N >= 1 (default: all)",
    )
    fetch.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="if another fetch of the same account and store runs, wait up to SECONDS for it (default 0: exit with code 5)",
    )
    fetch.add_argument(
        "--mbox-lock-wait",
        type=float,
        metavar="SECONDS",
        help="wait up to SECONDS for another program's mbox locks (default 60)",
    )
    fetch.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress line and no summary (errors are still printed); the progress line is shown only"
        " when stderr is a terminal",
    )
    _add_concurrency(fetch)
    fetch.set_defaults(func=cmd_fetch)

    watch = sub.add_parser(
        "watch",
        help="poll every account of a config file every interval, until stopped (SIGTERM or Ctrl-C)",
        description="Polls each account every `interval` seconds (config key, default 300), at most --concurrency"
        " accounts at once; backs off after failures, pauses an account whose login is refused. Logs one line per"
        " account and poll; `fastpoplib status` shows the last poll of each account. Exits 0 when stopped.",
    )
    _add_config_options(watch)
    watch.add_argument(
        "--interval", type=float, metavar="SECONDS", help="seconds between polls of every account (overrides the config)"
    )
    watch.add_argument(
        "--maildir", metavar="DIR", help=f"Maildir of accounts that name no store (default {DEFAULT_MAILDIR})"
    )
    _add_concurrency(watch)
    watch.set_defaults(func=cmd_watch)

    status = sub.add_parser("status", help="show each account's last poll, messages fetched, last error, next poll")
    _add_config_options(status)
    status.add_argument(
        "--maildir", metavar="DIR", help=f"Maildir of accounts that name no store (default {DEFAULT_MAILDIR})"
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {account, last_poll, fetched, total, last_error, next_poll, paused, pid};"
        " times in seconds since the epoch, null when unknown",
    )
    status.set_defaults(func=cmd_status)

    ls = sub.add_parser(
        "ls", help="list messages: number, size, UID, date, from, subject", epilog=EXIT_CODES, formatter_class=fmt
    )
    _add_account_options(ls)
    ls.add_argument(
        "--json", action="store_true", help="print a JSON list of {account, number, size, uid, date, from, subject}"
    )
    _add_concurrency(ls)
    ls.set_defaults(func=cmd_ls)

    serve = sub.add_parser("serve", help="run the built-in test server with a sample mailbox")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=1110, help="port to listen on (default 1110; 0: any free port)")
    serve.add_argument(
        "--tls",
        choices=["none", "implicit"],
        default="none",
        help="none (default) or implicit: POP3S with a generated test CA (needs trustme)",
    )
    serve.add_argument("--user", default="user", help="login name (default user)")
    serve.add_argument("--password", default="password", help="password (default password)")
    serve.add_argument(
        "--seconds", type=float, default=0, metavar="SECONDS", help="stop after SECONDS (default 0: run until Ctrl-C)"
    )
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="fetch a sample mailbox from the built-in server")
    demo.add_argument("--maildir", metavar="DIR", help="where to store (default: a new temporary folder)")
    demo.add_argument("--show", type=int, default=12, metavar="N", help="listing lines to show (default 12)")
    demo.set_defaults(func=cmd_demo)

    _auth_cli.add_parser(sub, accounts_from)

    for p in (serve, demo):
        p.add_argument(
            "--messages", type=int, default=12, metavar="N", help="sample messages in the mailbox (default 12)"
        )
        p.add_argument(
            "--seed", type=int, default=0, help="seed of the sample mailbox: same seed, same messages (default 0)"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.verbose:
            logging.basicConfig(
                level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                format="%(asctime)s %(name)s %(levelname)s %(message)s",
                stream=sys.stderr,
            )
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"fastpoplib: {printable(str(exc))}", file=sys.stderr)
        return _say_exit_code(EXIT_USAGE)
    except KeyboardInterrupt:
        print("fastpoplib: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
