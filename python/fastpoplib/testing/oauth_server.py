"""A local OAuth2 authorization server for tests, on loopback, built on authlib's server parts
(Flask integration, served by werkzeug in a thread). Needs ``pip install 'fastpoplib[testing]'``.

It implements what a mail client meets at Microsoft or Google, with knobs to provoke each
case a client must handle:

- discovery: ``/.well-known/oauth-authorization-server`` and ``/.well-known/openid-configuration``
  (RFC 8414);
- the device authorization grant (RFC 8628) with ``authorization_pending``, ``slow_down``
  (:attr:`slow_downs`), ``access_denied`` (:meth:`deny`) and ``expired_token``
  (:attr:`device_lifetime`); the user "approves" with :meth:`approve`;
- the authorization-code grant with PKCE (RFC 7636) for public clients: ``/authorize``
  approves at once as :attr:`browser_user` (``None``: the user denies);
- refresh with rotation: each use of a refresh token returns a new one and the old one
  stops working (``invalid_grant``);
- token introspection (RFC 7662) for resource servers such as Dovecot's ``oauth2`` passdb,
  with HTTP Basic authentication as client :data:`INTROSPECTION_CLIENT`; revocation (RFC 7009).

    with OAuth2TestServer() as oauth:
        oauth.add_client("mail-client")
        ...  # a client signs in against oauth.issuer
        oauth.refresh_count   # refresh grants served so far
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

try:
    from authlib.integrations.flask_oauth2 import AuthorizationServer  # type: ignore[import-untyped,unused-ignore]
    from authlib.oauth2 import OAuth2Error  # type: ignore[import-untyped,unused-ignore]
    from authlib.oauth2.rfc6749 import grants  # type: ignore[import-untyped,unused-ignore]
    from authlib.oauth2.rfc7009 import RevocationEndpoint  # type: ignore[import-untyped,unused-ignore]
    from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped,unused-ignore]
    from authlib.oauth2.rfc7662 import IntrospectionEndpoint  # type: ignore[import-untyped,unused-ignore]
    from authlib.oauth2.rfc8628 import (  # type: ignore[import-untyped,unused-ignore]
        DeviceAuthorizationEndpoint,
        DeviceCodeGrant,
        DeviceCredentialDict,
    )
    from flask import Flask, jsonify
    from werkzeug.serving import WSGIRequestHandler, make_server
except ImportError:  # pragma: no cover - depends on the extras installed
    raise ImportError("the OAuth2 test server needs authlib and flask: pip install 'fastpoplib[testing]'") from None

INTROSPECTION_CLIENT = ("resource-server", "resource-server-secret")  # (client_id, secret)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # request lines would fill test output (and carry authorization codes)


@dataclass
class Client:
    """A registered client; ``secret=None`` is a public client (PKCE, device grant).
    authlib's ``ClientMixin`` interface."""

    client_id: str
    secret: Optional[str] = None
    redirect_uris: List[str] = field(default_factory=list)
    loopback_redirect: bool = True  # any port on 127.0.0.1/localhost (RFC 8252 §7.3)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> Optional[str]:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        return self.loopback_redirect and redirect_uri.startswith(("http://127.0.0.1:", "http://localhost:"))

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and secrets.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token", DEVICE_GRANT)


@dataclass
class Token:
    client_id: str
    user: str
    scope: str
    access_token: str
    refresh_token: Optional[str]
    issued_at: float
    expires_in: int
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.access_revoked

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Any:
        return None


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: Optional[str]
    code_challenge_method: Optional[str]

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class _Part:
    """A grant or endpoint of the test server; authlib gives each its ``server``."""

    server: Any

    @property
    def owner(self) -> "OAuth2TestServer":
        owner: OAuth2TestServer = self.server.test_server
        return owner


class _AuthorizationCode(_Part, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code: str, req: Any) -> None:
        data = req.payload.data
        with self.owner._lock:
            self.owner._codes[code] = Code(
                code,
                req.client.get_client_id(),
                req.payload.redirect_uri,
                req.payload.scope or "",
                req.user,
                data.get("code_challenge"),
                data.get("code_challenge_method"),
            )

    def query_authorization_code(self, code: str, client: Any) -> Optional[Code]:
        item = self.owner._codes.get(code)
        return item if item is not None and item.client_id == client.get_client_id() else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        with self.owner._lock:
            self.owner._codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> str:
        return authorization_code.user

class _Refresh(_Part, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation

    def authenticate_refresh_token(self, refresh_token: str) -> Optional[Token]:
        token = self.owner._find(refresh_token, "refresh_token")
        return token if token is not None and not token.refresh_revoked else None

    def authenticate_user(self, credential: Token) -> str:
        return credential.user

    def revoke_old_credential(self, credential: Token) -> None:
        with self.owner._lock:
            credential.refresh_revoked = True
            self.owner.refresh_count += 1

class _DeviceCode(_Part, DeviceCodeGrant):
    def query_device_credential(self, device_code: str) -> Any:
        with self.owner._lock:
            self.owner.poll_times.append(time.monotonic())
        return self.owner._devices.get(device_code)

    def query_user_grant(self, user_code: str) -> Optional[Tuple[str, bool]]:
        return self.owner._grants.get(user_code)

    def should_slow_down(self, credential: Any) -> bool:
        with self.owner._lock:
            if self.owner.slow_downs > 0:
                self.owner.slow_downs -= 1
                return True
        return False

class _DeviceAuthorization(_Part, DeviceAuthorizationEndpoint):
    def create_endpoint_response(self, req: Any) -> Any:
        self.INTERVAL, self.EXPIRES_IN = self.owner.device_interval, self.owner.device_lifetime
        return super().create_endpoint_response(req)

    def get_verification_uri(self) -> str:
        return f"{self.owner.issuer}/device"

    def save_device_credential(self, client_id: str, scope: str, data: Dict[str, Any]) -> None:
        item = DeviceCredentialDict(client_id=client_id, scope=scope, expires_at=time.time() + data["expires_in"], **data)
        with self.owner._lock:
            self.owner._devices[data["device_code"]] = item

class _Introspection(_Part, IntrospectionEndpoint):
    def query_token(self, token_string: str, token_type_hint: Optional[str]) -> Optional[Token]:
        return self.owner._find(token_string, token_type_hint)

    def introspect_token(self, token: Token) -> Dict[str, Any]:
        return {
            "active": True,
            "client_id": token.client_id,
            "token_type": "Bearer",
            "username": token.user,
            "sub": token.user,
            "scope": token.scope,
            "iss": self.owner.issuer,
            "iat": int(token.issued_at),
            "exp": int(token.issued_at + token.expires_in),
        }

    def check_permission(self, token: Token, client: Any, req: Any) -> bool:
        return bool(client.get_client_id() == INTROSPECTION_CLIENT[0])

class _Revocation(_Part, RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string: str, token_type_hint: Optional[str]) -> Optional[Token]:
        return self.owner._find(token_string, token_type_hint)

    def revoke_token(self, token: Token, req: Any) -> None:
        with self.owner._lock:
            token.access_revoked = token.refresh_revoked = True


class OAuth2TestServer:
    """The server; ``start()`` (or ``with``) serves it on ``host``:``port`` (0: a free port).

    Attributes a test may change at any time: :attr:`access_token_lifetime` (seconds, in
    ``expires_in``), :attr:`access_token_length` (characters; Microsoft's exceed 4,096),
    :attr:`device_interval`, :attr:`device_lifetime`, :attr:`slow_downs` (how many polls
    answer ``slow_down``), :attr:`browser_user`, :attr:`refresh_token_expires_in` (sent
    as Google does for apps in testing; ``None``: not sent)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the OAuth2 test server listens on loopback only")
        self.host: str = host
        self._port = port
        self.access_token_lifetime: int = 3600
        self.access_token_length: int = 43
        self.device_interval: int = 1
        self.device_lifetime: int = 600
        self.slow_downs: int = 0
        self.browser_user: Optional[str] = "user@example.test"
        self.refresh_token_expires_in: Optional[int] = None
        self.clients: Dict[str, Client] = {}
        self.tokens: List[Token] = []
        self.refresh_count: int = 0  # refresh grants that issued tokens
        self.token_requests: int = 0  # requests to the token endpoint, whatever their outcome
        self.poll_times: List[float] = []  # time.monotonic() of each device-grant poll
        self._lock = threading.RLock()  # werkzeug serves each request in its own thread
        self._codes: Dict[str, Code] = {}
        self._devices: Dict[str, DeviceCredentialDict] = {}
        self._grants: Dict[str, Tuple[str, bool]] = {}  # user_code -> (user, approved)
        self._httpd: Any = None
        self._thread: Optional[threading.Thread] = None
        self.add_client(*INTROSPECTION_CLIENT)
        self.app: Any = self._build_app()  # the Flask (WSGI) application

    # -- what a test does -------------------------------------------------------------------
    def add_client(self, client_id: str, secret: Optional[str] = None, redirect_uris: Optional[List[str]] = None) -> Client:
        client = Client(client_id, secret, list(redirect_uris or []))
        self.clients[client_id] = client
        return client

    def approve(self, user_code: str, user: str = "user@example.test") -> None:
        """The user enters ``user_code`` at the verification URI and approves as ``user``."""
        with self._lock:
            self._grants[user_code] = (user, True)

    def deny(self, user_code: str) -> None:
        """The user enters ``user_code`` and refuses: the next poll gets ``access_denied``."""
        with self._lock:
            self._grants[user_code] = ("", False)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (refresh tokens stay valid)."""
        with self._lock:
            for token in self.tokens:
                token.expires_in = min(token.expires_in, int(time.time() - token.issued_at) - 1)

    def revoke_all(self, user: Optional[str] = None) -> None:
        """The user (or every user) withdraws consent: access and refresh tokens stop working."""
        with self._lock:
            for token in self.tokens:
                if user is None or token.user == user:
                    token.access_revoked = token.refresh_revoked = True

    def active_refresh_tokens(self, user: Optional[str] = None) -> List[str]:
        """Refresh tokens that still work (of ``user``, or of everyone)."""
        with self._lock:
            return [t.refresh_token for t in self.tokens if t.refresh_token and not t.refresh_revoked and user in (None, t.user)]

    def issued_tokens(self) -> List[str]:
        """Every access and refresh token issued, to check that none leaked anywhere."""
        with self._lock:
            return [s for t in self.tokens for s in (t.access_token, t.refresh_token) if s]

    @property
    def port(self) -> int:
        return int(self._httpd.server_port) if self._httpd else self._port

    @property
    def issuer(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def metadata(self) -> Dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "device_authorization_endpoint": f"{base}/device_authorization",
            "introspection_endpoint": f"{base}/introspect",
            "revocation_endpoint": f"{base}/revoke",
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        }

    def start(self) -> "OAuth2TestServer":
        self._httpd = make_server(self.host, self._port, self.app, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="oauth2-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(10)
            self._httpd = None

    def __enter__(self) -> "OAuth2TestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the authlib server -----------------------------------------------------------------
    def _generate(
        self, grant_type: str, client: Any, user: Any = None, scope: Any = None, expires_in: Any = None, include_refresh_token: bool = True
    ) -> Dict[str, Any]:
        token: Dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": secrets.token_urlsafe(self.access_token_length)[: self.access_token_length],
            "expires_in": self.access_token_lifetime,
            "scope": scope or "",
        }
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(32)
            if self.refresh_token_expires_in is not None:
                token["refresh_token_expires_in"] = self.refresh_token_expires_in
        return token

    def _save_token(self, token: Dict[str, Any], req: Any) -> None:
        with self._lock:
            self.tokens.append(
                Token(
                    client_id=req.client.get_client_id(),
                    user=req.user,
                    scope=token.get("scope", ""),
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    issued_at=time.time(),
                    expires_in=int(token["expires_in"]),
                )
            )

    def _find(self, value: str, kind: Optional[str]) -> Optional[Token]:
        with self._lock:
            for token in self.tokens:
                if kind != "refresh_token" and token.access_token == value:
                    return token
                if kind != "access_token" and token.refresh_token == value:
                    return token
        return None

    def _build_app(self) -> Any:
        outer = self
        app = Flask("fastpoplib-oauth2-test-server")
        server = AuthorizationServer(app, query_client=self.clients.get, save_token=self._save_token)
        server.register_token_generator("default", self._generate)
        server.test_server = self

        server.register_grant(_AuthorizationCode, [CodeChallenge(required=True)])
        server.register_grant(_Refresh)
        server.register_grant(_DeviceCode)
        server.register_endpoint(_DeviceAuthorization)
        server.register_endpoint(_Introspection)
        server.register_endpoint(_Revocation)

        @app.get("/.well-known/oauth-authorization-server")
        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return jsonify(outer.metadata())

        @app.get("/authorize")
        def authorize() -> Any:
            try:
                grant = server.get_consent_grant(end_user=outer.browser_user)
            except OAuth2Error as error:
                return server.handle_error_response(None, error)
            return server.create_authorization_response(grant=grant, grant_user=outer.browser_user)

        @app.post("/token")
        def token() -> Any:
            with outer._lock:
                outer.token_requests += 1
            return server.create_token_response()

        @app.post("/device_authorization")
        def device_authorization() -> Any:
            return server.create_endpoint_response(_DeviceAuthorization.ENDPOINT_NAME)

        @app.post("/introspect")
        def introspect() -> Any:
            return server.create_endpoint_response(_Introspection.ENDPOINT_NAME)

        @app.post("/revoke")
        def revoke() -> Any:
            return server.create_endpoint_response(_Revocation.ENDPOINT_NAME)

        @app.get("/device")
        def device_page() -> Any:
            return "enter the code shown by the device (tests call OAuth2TestServer.approve)\n"

        return app
