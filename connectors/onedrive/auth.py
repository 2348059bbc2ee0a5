"""App-only access tokens for Microsoft Graph, through msal's client-credentials flow.

``GraphTokens`` wraps one ``msal.ConfidentialClientApplication`` (client secret or certificate),
asks for ``https://graph.microsoft.com/.default`` and lets msal's token cache answer repeated
calls, so a long sync asks the identity platform for a token once per hour, not once per request.
The cache can be persisted to a file (mode 0600) so separate runs share a token.

TLS: ``verify`` (True, False or a CA-bundle path) is applied to every request msal makes through
our own ``requests`` session. A plain ``requests.Session.verify`` is silently replaced by the
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` environment variables; passing ``verify`` per request
is what makes an explicit CA bundle win.

What it does not do: delegated (user) sign-in, managed identity, or calling Graph itself
(``connectors.onedrive.graph`` does that). The authority host is a parameter (national clouds,
or the local fake in tests).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

from assistant.errors import AuthError, ConfigError

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
_KNOWN_HOSTS = frozenset(WELL_KNOWN_AUTHORITY_HOSTS)


class VerifyingSession(requests.Session):
    """A ``requests.Session`` whose ``verify`` and timeout apply to every request.

    ``requests`` lets ``REQUESTS_CA_BUNDLE`` override ``Session.verify`` unless the request passes
    ``verify=`` itself, so this session passes it on every call.
    """

    def __init__(self, *, verify: bool | str = True, timeout: float | None = 30.0) -> None:
        super().__init__()
        self.verify = verify
        self._timeout = timeout

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("verify", self.verify)
        if self._timeout is not None:
            kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, **kwargs)


def _load_certificate(path: Path, thumbprint: str | None, passphrase: str | None) -> dict[str, Any]:
    """PEM file with a private key (and ideally its certificate) → msal's credential dict."""
    try:
        pem = path.read_text()
    except OSError as e:
        raise ConfigError(
            f"Cannot read the OneDrive certificate file {path}: {e}. "
            "Set connectors.onedrive.certificate_file to a PEM holding the private key."
        ) from None
    if "PRIVATE KEY-----" not in pem:
        raise ConfigError(
            f"{path} holds no PEM private key. Convert a .pfx with "
            "`openssl pkcs12 -in cert.pfx -out cert.pem -nodes`."
        )
    cred: dict[str, Any] = {"private_key": pem}
    if "BEGIN CERTIFICATE" in pem:
        start = pem.index("-----BEGIN CERTIFICATE-----")
        end = pem.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
        cred["public_certificate"] = pem[start:end]
    if thumbprint:
        cred["thumbprint"] = thumbprint.replace(":", "").upper()
    elif "public_certificate" not in cred:
        raise ConfigError(
            f"{path} has a private key but no certificate; add the certificate to the PEM "
            "or set connectors.onedrive.certificate_thumbprint."
        )
    if passphrase:
        cred["passphrase"] = passphrase
    return cred


class GraphTokens:
    """Callable token source: ``tokens()`` → a bearer token string; ``tokens.invalidate()`` drops it.

    msal and the authority are set up lazily (msal contacts the authority while constructing the
    application), so building a connector never touches the network.
    """

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        certificate_file: Path | str | None = None,
        certificate_thumbprint: str | None = None,
        certificate_passphrase: str | None = None,
        authority_host: str = "https://login.microsoftonline.com",
        scope: str = GRAPH_SCOPE,
        verify: bool | str = True,
        timeout: float = 30.0,
        token_cache_file: Path | str | None = None,
        instance_discovery: bool | str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not tenant_id or not client_id:
            raise ConfigError(
                "OneDrive needs connectors.onedrive.tenant_id and client_id "
                "(from the Azure app registration's Overview page)."
            )
        if not client_secret and not certificate_file:
            raise ConfigError(
                "OneDrive needs connectors.onedrive.client_secret or certificate_file "
                "(Azure app registration → Certificates & secrets)."
            )
        if not authority_host.startswith("https://"):
            raise ConfigError(
                f"connectors.onedrive.authority_host={authority_host!r} must be an https:// URL "
                "(msal refuses plain http)."
            )
        self.authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self.client_id = client_id
        self.scope = scope
        self._secret = client_secret
        self._cert = (
            (Path(certificate_file), certificate_thumbprint, certificate_passphrase)
            if certificate_file
            else None
        )
        self._session = session or VerifyingSession(verify=verify, timeout=timeout)
        self._cache = msal.SerializableTokenCache()
        self._cache_file = Path(token_cache_file) if token_cache_file else None
        if self._cache_file and self._cache_file.exists():
            self._cache.deserialize(self._cache_file.read_text())
        if instance_discovery is None and urlsplit(authority_host).hostname not in _KNOWN_HOSTS:
            # msal would ask login.microsoftonline.com to vouch for a host Microsoft does not run
            # (a proxy, the local fake); the tenant's OpenID configuration is still checked.
            instance_discovery = False
        self._instance_discovery = instance_discovery
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()
        self.requests_made = 0  # token requests that reached the identity platform

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            credential: Any = self._secret if self._secret else _load_certificate(*self._cert)  # type: ignore[misc]
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=credential,
                    authority=self.authority,
                    token_cache=self._cache,
                    http_client=self._session,
                    instance_discovery=self._instance_discovery,
                )
            except (ValueError, requests.RequestException) as e:
                raise AuthError(
                    f"Cannot reach the Microsoft identity platform at {self.authority}: {e}. "
                    "Check connectors.onedrive.authority_host, tenant_id and the TLS setting "
                    "connectors.onedrive.verify."
                ) from None
        return self._app

    def __call__(self) -> str:
        with self._lock:
            app = self._application()
            try:
                result = app.acquire_token_for_client(scopes=[self.scope])
            except requests.RequestException as e:
                raise AuthError(
                    f"Token request to {self.authority} failed: {e}. "
                    "Check network access and connectors.onedrive.verify."
                ) from None
            if "access_token" not in result:
                desc = str(result.get("error_description", "")).splitlines()[0:1]
                raise AuthError(
                    f"Microsoft identity platform refused the app credentials: {result.get('error')}: "
                    f"{desc[0] if desc else ''} Check connectors.onedrive.client_id and client_secret "
                    "(use the secret's Value, not its ID) or the certificate uploaded to the app registration."
                )
            if result.get("token_source") != "cache":
                self.requests_made += 1
            self._persist()
            return str(result["access_token"])

    def invalidate(self) -> None:
        """Forget cached app tokens (Graph said 401), so the next call asks for a new one."""
        with self._lock:
            if self._app is not None:
                self._app.remove_tokens_for_client()
                self._persist()

    def _persist(self) -> None:
        if self._cache_file is None or not self._cache.has_state_changed:
            return
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._cache.serialize())
        os.replace(tmp, self._cache_file)
        self._cache.has_state_changed = False
