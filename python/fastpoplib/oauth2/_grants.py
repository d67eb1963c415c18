"""The HTTP side of OAuth2, over authlib's httpx client: discovery (RFC 8414), the device
authorization grant (RFC 8628), the authorization-code grant with PKCE (RFC 7636) through a
loopback redirect (RFC 8252), and refresh (RFC 6749 §6). Imported only when a token is needed:
``import fastpoplib`` stays free of authlib and httpx."""

from __future__ import annotations

import http.server
import math
import secrets
import threading
import time
import webbrowser
from typing import Any, Callable, Dict, Optional
from urllib.parse import parse_qs, urlsplit

from ._errors import Denied, InvalidGrant, OAuth2ConfigError, OAuth2Error
from ._providers import Settings, require_https

try:
    try:
        import httpx2
    except ImportError:  # httpx2 needs Python 3.11; authlib uses httpx below that
        import httpx as httpx2  # type: ignore[no-redef,import-not-found,unused-ignore]
    from authlib.integrations.httpx_client import OAuth2Client, OAuthError  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - depends on the extras installed
    raise ImportError("OAuth2 needs the oauth extra: pip install 'fastpoplib[oauth]'") from None

HTTP_TIMEOUT = 30.0  # seconds per HTTP request to the authorization server, the whole response included
MAX_RESPONSE = 1 << 20  # bytes of a response body (token, device, discovery) read at most
BROWSER_WAIT = 300.0  # seconds to wait for the browser to come back to the loopback redirect
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class _Bounded:
    """An httpx client whose every response is read here, whole but bounded: at most
    :data:`MAX_RESPONSE` bytes (decoded) within :data:`HTTP_TIMEOUT` seconds from the
    request, else OAuth2Error. httpx alone would read any length, any time (each read
    of the socket has its timeout, not the response)."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + HTTP_TIMEOUT
        request.headers["Accept-Encoding"] = "identity"  # a small compressed body could inflate past the bound
        kwargs["stream"] = True
        response = super().send(request, **kwargs)  # type: ignore[misc]
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE:
                    raise OAuth2Error(
                        f"{_host(str(request.url))} sent a response over the {MAX_RESPONSE / (1 << 20):g} MiB limit; check the endpoint"
                    )
                if time.monotonic() > deadline:
                    raise OAuth2Error(f"{_host(str(request.url))} did not finish its response within {HTTP_TIMEOUT:g} s; try again later")
        finally:
            response.close()
        # The body is decoded already: the headers that described its transfer go.
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _TRANSFER_HEADERS]
        return httpx2.Response(response.status_code, headers=headers, content=bytes(body), request=response.request)


_TRANSFER_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


class _OAuth2Client(_Bounded, OAuth2Client):  # type: ignore[misc,valid-type,unused-ignore]
    pass


class _HTTPClient(_Bounded, httpx2.Client):  # type: ignore[misc,valid-type,unused-ignore]
    pass


def _client(settings: Settings) -> Any:
    secret = settings.client_secret.reveal() if settings.client_secret else None
    return _OAuth2Client(
        client_id=settings.client_id,
        client_secret=secret,
        token_endpoint_auth_method="client_secret_post" if secret else "none",
        revocation_endpoint_auth_method="client_secret_post" if secret else "none",
        scope=settings.scope,
        code_challenge_method="S256",
        timeout=HTTP_TIMEOUT,
        follow_redirects=False,
    )


def _what(exc: BaseException, url: str, sent: str = "") -> OAuth2Error:
    """An OAuth2Error for a failed request, naming the host (never userinfo from the URL) and
    the server's error code and description (printable, 200 characters at most): RFC 6749
    §5.2 error words and prose, with the token ``sent`` masked should the server echo it."""
    host = _host(url)
    if isinstance(exc, OAuth2Error):  # ours already: a bounded read failed
        return exc
    if isinstance(exc, OAuthError):
        text = str(exc.description or "")
        description = f" ({_printable(_masked(text, sent))})" if text else ""
        error = _printable(_masked(str(exc.error or "error"), sent))
        if exc.error == "invalid_grant":
            return InvalidGrant(f"{host} refused the grant: invalid_grant{description}")
        return OAuth2Error(f"{host} answered {error}{description}")
    if isinstance(exc, httpx2.TimeoutException):
        return OAuth2Error(f"no answer from {host} within {HTTP_TIMEOUT:g} s; try again later")
    if isinstance(exc, httpx2.HTTPStatusError):
        # Reached, but answered HTTP 4xx/5xx or a redirect without an OAuth2 error body.
        status = exc.response.status_code
        return OAuth2Error(f"{host} answered HTTP {status}, not an OAuth2 response; check the endpoint, or try again later")
    if isinstance(exc, httpx2.HTTPError):
        return OAuth2Error(f"cannot reach {host}: {type(exc).__name__}; check the network and the endpoint")
    return OAuth2Error(f"{host} sent a reply that is not an OAuth2 token response; check the endpoint")


def _masked(text: str, sent: str) -> str:
    """``text`` with the token ``sent`` masked, should the server echo it (in any field)."""
    return text.replace(sent, "****") if sent else text


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c if c.isprintable() else "?" for c in str(text)[:limit])


def discover(settings: Settings) -> Settings:
    """``settings`` with endpoints from the issuer's metadata (RFC 8414, then OpenID
    Connect discovery), where it has an issuer and lacks endpoints. The metadata's
    ``issuer`` must equal the configured one exactly (RFC 8414 §3.3, OpenID Connect
    Discovery §4.3), else OAuth2ConfigError and nothing of it is used: another server's
    metadata would send the grants (and the user) there."""
    if settings.issuer is None or (settings.token_endpoint and (settings.device_endpoint or settings.authorization_endpoint)):
        return settings
    issuer = settings.issuer
    last = ""
    with _HTTPClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
        for url in _metadata_urls(issuer):
            try:
                resp = http.get(url)
            except OAuth2Error as exc:  # the bounded read: too long, too slow
                last = str(exc)
                continue
            except httpx2.HTTPError as exc:
                raise _what(exc, url) from None
            if resp.status_code != 200:
                last = f"HTTP {resp.status_code}"
                continue
            try:
                metadata = resp.json()
            except ValueError:
                last = "not JSON"
                continue
            if not isinstance(metadata, dict) or not isinstance(metadata.get("token_endpoint"), str):
                last = "no token_endpoint in it"
                continue
            if metadata.get("issuer") != issuer:
                said = metadata.get("issuer")
                shown = repr(_printable(said)) if isinstance(said, str) else "no issuer"
                raise OAuth2ConfigError(
                    f"the metadata at {url} names {shown} as its issuer, not {issuer!r} (oauth2_issuer); they must be"
                    " equal (RFC 8414 §3.3), so nothing of it was used: this may be a mix-up or an attack."
                    " Check oauth2_issuer (exactly, trailing slash included)"
                )
            return settings.with_metadata(metadata)
    raise OAuth2ConfigError(f"discovery at {issuer} failed ({last}); set oauth2_token_endpoint and the other endpoints instead")


def _metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be: RFC 8414 §3.1 inserts the well-known path between
    the host and the issuer's path; OpenID Connect Discovery §4 appends it. Same URLs for
    an issuer without a path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    return [f"{origin}/.well-known/oauth-authorization-server{path}", f"{issuer.rstrip('/')}/.well-known/openid-configuration"]


def refresh(settings: Settings, refresh_token: str) -> Dict[str, Any]:
    """A refresh grant; the token response (with the rotated refresh token when the server
    rotates). Raises InvalidGrant when the refresh token is refused, OAuth2Error otherwise."""
    url = _endpoint(settings.token_endpoint, "oauth2_token_endpoint")
    with _client(settings) as client:
        try:
            return dict(client.refresh_token(url, refresh_token=refresh_token))
        except Exception as exc:  # noqa: BLE001 - authlib raises httpx, OAuthError and ValueError
            raise _what(exc, url, refresh_token) from None


def revoke(settings: Settings, refresh_token: str) -> None:
    """RFC 7009: ask the provider to revoke the refresh token (and the grant with it).
    Raises OAuth2Error when the request fails or is refused."""
    url = _endpoint(settings.revocation_endpoint, "revocation endpoint")
    with _client(settings) as client:
        try:
            resp = client.revoke_token(url, token=refresh_token, token_type_hint="refresh_token")
        except Exception as exc:  # noqa: BLE001 - httpx errors
            raise _what(exc, url, refresh_token) from None
    if resp.status_code != 200:
        raise OAuth2Error(f"{_host(url)} answered HTTP {resp.status_code} to the revocation")


def _endpoint(url: Optional[str], key: str) -> str:
    if not url:
        raise OAuth2ConfigError(f"the authorization server has no {key.replace('oauth2_', '').replace('_', ' ')}; set {key}")
    return require_https(url, key)


def device_login(settings: Settings, say: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    """RFC 8628: asks for a user code, shows the verification URI and the code through
    ``say``, then polls the token endpoint every ``interval`` seconds (5 more after each
    ``slow_down``, §3.5) until the user approves (the token response), refuses or the code
    expires (Denied)."""
    device_url = _endpoint(settings.device_endpoint, "oauth2_device_endpoint")
    token_url = _endpoint(settings.token_endpoint, "oauth2_token_endpoint")
    with _client(settings) as client:
        try:
            form = {"client_id": settings.client_id, "scope": settings.scope, **_secret_field(settings)}
            resp = client.request("POST", device_url, data=form, withhold_token=True)
            grant = resp.json()
        except Exception as exc:  # noqa: BLE001
            raise _what(exc, device_url) from None
        if resp.status_code != 200 or not isinstance(grant, dict) or "error" in grant:
            error = grant.get("error", f"HTTP {resp.status_code}") if isinstance(grant, dict) else f"HTTP {resp.status_code}"
            hint = "; Google allows its mail scope only with --browser" if settings.provider == "google" else ""
            raise OAuth2Error(f"the device authorization request was refused: {_printable(error)}{hint}")
        try:
            device_code = str(grant["device_code"])
            user_code = str(grant["user_code"])
            uri = str(grant.get("verification_uri") or grant["verification_url"])  # Google's older name
            interval = float(grant.get("interval", 5))
            lifetime = float(grant.get("expires_in", 900))
            if not (math.isfinite(interval) and math.isfinite(lifetime)):
                raise ValueError("not finite")
        except (KeyError, ValueError, TypeError):
            raise OAuth2Error("the device authorization response lacks device_code, user_code, verification_uri or a valid interval") from None
        interval = max(1.0, interval)
        deadline = time.monotonic() + lifetime
        say(f"To sign in, open {_printable(uri)} and enter the code {_printable(user_code)}")
        while True:
            sleep(max(0.0, min(interval, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                raise Denied("the code expired before you approved it; run fastpoplib auth login again")
            try:
                return dict(client.fetch_token(token_url, grant_type=DEVICE_GRANT, device_code=device_code))
            except OAuthError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval += 5
                    continue
                if exc.error == "access_denied":
                    raise Denied("the sign-in was refused at the authorization server") from None
                if exc.error == "expired_token":
                    raise Denied("the code expired before you approved it; run fastpoplib auth login again") from None
                raise _what(exc, token_url) from None
            except Exception as exc:  # noqa: BLE001
                raise _what(exc, token_url) from None


def _secret_field(settings: Settings) -> Dict[str, str]:
    return {"client_secret": settings.client_secret.reveal()} if settings.client_secret else {}


class _Redirect(http.server.BaseHTTPRequestHandler):
    """Receives the browser's redirect on the loopback address: keeps the query of a request
    whose ``state`` matches, answers any other with 400."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        query = parse_qs(urlsplit(self.path).query)
        server: Any = self.server
        if query.get("state") != [server.state]:
            self.send_error(400, "unexpected request")
            return
        server.result = query
        body = b"fastpoplib: sign-in finished; you may close this window.\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the URL holds the code: never logged
        pass


def browser_login(settings: Settings, say: Callable[[str], None], open_browser: Callable[[str], Any] = webbrowser.open) -> Dict[str, Any]:
    """The authorization-code grant with PKCE (S256) and a loopback redirect (RFC 8252 §7.3):
    listens on 127.0.0.1 (any free port), opens the authorization URL in the browser (and
    shows it through ``say``), waits up to :data:`BROWSER_WAIT` seconds for the redirect,
    then exchanges the code. Raises Denied when the user refuses or does not come back."""
    authorize_url = _endpoint(settings.authorization_endpoint, "oauth2_authorization_endpoint")
    token_url = _endpoint(settings.token_endpoint, "oauth2_token_endpoint")
    receiver: Any = http.server.HTTPServer(("127.0.0.1", 0), _Redirect)
    receiver.timeout = 1.0
    receiver.state, receiver.result = secrets.token_urlsafe(24), None
    redirect_uri = f"http://{settings.redirect_host}:{receiver.server_port}"  # no path: Entra matches "http://localhost"
    verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43..128
    try:
        with _client(settings) as client:
            url, _ = client.create_authorization_url(authorize_url, state=receiver.state, code_verifier=verifier, redirect_uri=redirect_uri)
            say(f"To sign in, open this address in a browser (opening it now):\n{url}")
            threading.Thread(target=open_browser, args=(url,), daemon=True).start()
            deadline = time.monotonic() + BROWSER_WAIT
            while receiver.result is None:
                if time.monotonic() >= deadline:
                    raise Denied(f"no answer from the browser within {BROWSER_WAIT:g} s; run fastpoplib auth login again")
                receiver.handle_request()
            result = receiver.result
            if "error" in result:
                raise Denied(f"the sign-in was refused: {_printable(result['error'][0])}")
            if "code" not in result:
                raise OAuth2Error("the authorization server redirected back without a code")
            try:
                token = client.fetch_token(
                    token_url, grant_type="authorization_code", code=result["code"][0], code_verifier=verifier, redirect_uri=redirect_uri
                )
                return dict(token)
            except Exception as exc:  # noqa: BLE001
                raise _what(exc, token_url) from None
    finally:
        receiver.server_close()
