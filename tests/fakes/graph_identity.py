"""A local fake of the Microsoft identity platform (v2.0 endpoints) over HTTPS, for real msal.

msal refuses plain-http authorities, so ``make_tls_cert`` creates a throw-away self-signed
certificate (``cryptography``) for 127.0.0.1/localhost, the server serves TLS with it, and the
client trusts it through its ``verify=<ca path>`` setting.

Endpoints:
- ``GET /common/discovery/instance`` (msal's instance discovery for hosts it does not know)
- ``GET /{tenant}/v2.0/.well-known/openid-configuration``
- ``POST /{tenant}/oauth2/v2.0/token``: client-credentials grant with a client secret or a signed
  client assertion (certificate; RS256/PS256 verified against the registered certificate). Errors
  have the real AADSTS shape (``error``, ``error_description``, ``error_codes``, ``trace_id``...).

Issued tokens go into the shared ``GraphWorld.tokens`` so the Graph fake can check them. What it
does not do: delegated flows, refresh tokens, id tokens, or real JWT access tokens.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def make_tls_cert(directory: Path, *, name: str = "fake-identity") -> tuple[Path, Path]:
    """Self-signed cert + key (PEM files) valid for 127.0.0.1 and localhost; returns (cert, key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                key_cert_sign=True,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def make_client_certificate(directory: Path) -> Path:
    """A PEM holding a private key and its certificate, as an app registration's credential."""
    cert, key = make_tls_cert(directory, name="app-credential")
    both = directory / "app-credential.pem"
    both.write_text(key.read_text() + cert.read_text())
    return both


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _aad_error(status: int, error: str, code: int, text: str) -> tuple[int, dict]:
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


class FakeIdentity:
    """Registered apps of one tenant, the HTTPS server, and a record of every request."""

    def __init__(self, world, *, tenant: str, cert: Path, key: Path, token_lifetime_s: int = 3599) -> None:
        self.world = world
        self.tenant = tenant
        self.apps: dict[str, dict] = {}  # client_id → {"secret": str|None, "cert": x509.Certificate|None}
        self.token_lifetime_s = token_lifetime_s
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, form or query)
        self._lock = threading.Lock()
        handler = type("Handler", (_IdentityHandler,), {"identity": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def register_app(
        self, client_id: str, *, secret: str | None = None, certificate_pem: Path | None = None
    ) -> None:
        cert = x509.load_pem_x509_certificate(certificate_pem.read_bytes()) if certificate_pem else None
        self.apps[client_id] = {"secret": secret, "cert": cert}

    def token_requests(self) -> int:
        return sum(1 for m, p, _ in self.requests if m == "POST" and p.endswith("/oauth2/v2.0/token"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- endpoint logic ----------------------------------------------------------------------
    def openid_configuration(self, tenant: str) -> tuple[int, dict]:
        if tenant not in (self.tenant, "organizations", "common"):
            return _aad_error(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure "
                "you have the correct tenant ID and are signing into the correct cloud.",
            )
        base = f"{self.url}/{tenant}"
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{self.url}/{tenant}/v2.0",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }

    def instance_discovery(self, query: dict) -> tuple[int, dict]:
        auth = (query.get("authorization_endpoint") or [""])[0]
        tenant = urlsplit(auth).path.strip("/").split("/")[0] or "common"
        host = urlsplit(self.url).netloc
        return 200, {
            "tenant_discovery_endpoint": f"{self.url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }

    def _check_assertion(self, app: dict, assertion: str, audience: str, client_id: str) -> bool:
        try:
            head_b64, body_b64, sig_b64 = assertion.split(".")
            header, body = json.loads(_b64url(head_b64)), json.loads(_b64url(body_b64))
            signed, sig = f"{head_b64}.{body_b64}".encode(), _b64url(sig_b64)
            pub = app["cert"].public_key()
            if header.get("alg") == "PS256":
                pub.verify(
                    sig,
                    signed,
                    padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
                    hashes.SHA256(),
                )
            elif header.get("alg") == "RS256":
                pub.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                return False
        except (ValueError, KeyError, TypeError, InvalidSignature):  # malformed or forged
            return False
        return (
            body.get("aud") == audience
            and body.get("iss") == client_id == body.get("sub")
            and float(body.get("exp", 0)) > time.time()
        )

    def token(self, tenant: str, form: dict) -> tuple[int, dict]:
        get = lambda k: (form.get(k) or [None])[0]
        if tenant != self.tenant:
            return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if get("grant_type") != "client_credentials":
            return _aad_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = get("client_id")
        app = self.apps.get(client_id or "")
        if app is None:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was "
                f"not found in the directory '{tenant}'. This can happen if the application has not "
                "been installed by the administrator of the tenant.",
            )
        scope = get("scope") or ""
        if not any(s.endswith("/.default") for s in scope.split()):
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. "
                "Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
            )
        if get("client_assertion"):
            audience = f"{self.url}/{tenant}/oauth2/v2.0/token"
            if app["cert"] is None or not self._check_assertion(
                app, get("client_assertion"), audience, client_id
            ):
                return _aad_error(
                    401, "invalid_client", 700027, "Client assertion failed signature validation."
                )
        elif get("client_secret") is None or get("client_secret") != app["secret"]:
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being "
                "sent in the request is the client secret value, not the client secret ID, for a "
                f"secret added to app '{client_id}'.",
            )
        token = secrets.token_urlsafe(24)
        self.world.tokens[token] = time.time() + self.token_lifetime_s
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_s,
            "ext_expires_in": self.token_lifetime_s,
            "access_token": token,
        }


class _IdentityHandler(BaseHTTPRequestHandler):
    identity: FakeIdentity
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with self.identity._lock:
            self.identity.requests.append(("GET", parts.path, query))
        segs = parts.path.strip("/").split("/")
        if parts.path == "/common/discovery/instance":
            self._reply(*self.identity.instance_discovery(query))
        elif len(segs) == 4 and segs[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            self._reply(*self.identity.openid_configuration(segs[0]))
        else:
            self._reply(404, {"error": "not_found", "error_description": f"no route {parts.path}"})

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        with self.identity._lock:
            self.identity.requests.append(("POST", parts.path, form))
        segs = parts.path.strip("/").split("/")
        if len(segs) == 4 and segs[1:] == ["oauth2", "v2.0", "token"]:
            self._reply(*self.identity.token(segs[0], form))
        else:
            self._reply(404, {"error": "not_found", "error_description": f"no route {parts.path}"})
