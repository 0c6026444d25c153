"""NOAH request authentication: the ``X-Api-Key`` header and the ``Api-Signature`` JWT.

Each rejection carries a Detail that says what was wrong, so a failing client test points at its
cause. Neither the key nor the token is ever echoed.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Literal, TypeGuard

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from balances_etl.emulator.dataset import ENVIRONMENTS, Environment

AUDIENCE = "https://api.noah.com"
MAX_LIFETIME_SECONDS = 900
MAX_IAT_FUTURE_SECONDS = 60
API_KEY_PREFIXES: dict[Environment, str] = {"sandbox": "apikey_sandbox_", "production": "apikey_prod_"}

_CURVES: dict[str, type[ec.EllipticCurve]] = {"P-384": ec.SECP384R1, "P-256": ec.SECP256R1}
_ALGORITHM_BY_CURVE = {"secp384r1": "ES384", "secp256r1": "ES256"}
_PRIVATE_FORMATS = {
    "pkcs8": serialization.PrivateFormat.PKCS8,
    "sec1": serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN EC PRIVATE KEY", as openssl ecparam writes
}


class AuthError(Exception):
    """A request NOAH would answer with 401 Unauthorized; the message is the Detail."""


def generate_signing_keypair(
    curve: Literal["P-384", "P-256"] = "P-384", fmt: Literal["pkcs8", "sec1"] = "pkcs8"
) -> tuple[bytes, bytes]:
    """A request-signing key pair as (private PEM, SubjectPublicKeyInfo public PEM)."""
    private_key = ec.generate_private_key(_CURVES[curve]())
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, _PRIVATE_FORMATS[fmt], serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def check_api_key(sent: str | None, expected: str, environment: Environment) -> None:
    if not sent:
        raise AuthError("Missing X-Api-Key header")
    if hmac.compare_digest(sent.encode(), expected.encode()):
        return
    for other in ENVIRONMENTS:
        if other != environment and sent.startswith(API_KEY_PREFIXES[other]):
            raise AuthError(f"The API key belongs to the {other} environment; this is the {environment} API")
    raise AuthError("Invalid API key")


class SignatureVerifier:
    """Verifies ``Api-Signature`` against one registered EC public key (P-384 or P-256)."""

    def __init__(self, public_key_pem: bytes) -> None:
        key = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _ALGORITHM_BY_CURVE:
            raise ValueError("the signing public key must be an EC P-384 or P-256 key")
        self._key = key
        self.algorithm = _ALGORITHM_BY_CURVE[key.curve.name]

    def verify(
        self, token: str | None, method: str, path: str, query: Mapping[str, str], now: float
    ) -> dict[str, object]:
        """The verified claims of ``token`` for this request; raises AuthError saying what is wrong."""
        if not token:
            raise AuthError("Missing Api-Signature header: this API key requires signed requests")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.DecodeError:
            raise AuthError("Api-Signature is not a well-formed JWT") from None
        if algorithm != self.algorithm:
            raise AuthError(f"JWT algorithm {algorithm!r} is not accepted: the registered key needs {self.algorithm}")
        try:
            payload = jwt.api_jws.decode(token, self._key, algorithms=[self.algorithm])
        except jwt.InvalidSignatureError:
            raise AuthError("JWT signature does not verify with the registered signing public key") from None
        except jwt.InvalidTokenError:
            raise AuthError("Api-Signature is not a well-formed JWT") from None
        try:
            claims = json.loads(payload)
        except ValueError:
            claims = None
        if not isinstance(claims, dict):
            raise AuthError("JWT payload is not a JSON object")
        _check_claims(claims, method, path, query, now)
        return claims


def _check_claims(claims: dict[str, object], method: str, path: str, query: Mapping[str, str], now: float) -> None:
    if claims.get("aud") != AUDIENCE:
        raise AuthError(f"JWT claim 'aud' must be {AUDIENCE!r}")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not _is_unix_seconds(iat):
        raise AuthError("JWT claim 'iat' must be an integer (unix seconds)")
    if not _is_unix_seconds(exp):
        raise AuthError("JWT claim 'exp' must be an integer (unix seconds)")
    if exp <= iat:
        raise AuthError("JWT claim 'exp' must be after 'iat'")
    if exp - iat > MAX_LIFETIME_SECONDS:
        raise AuthError(f"JWT lifetime exp - iat = {exp - iat} s exceeds {MAX_LIFETIME_SECONDS} s")
    if exp <= now:
        raise AuthError(f"JWT expired {int(now - exp)} s ago")
    if iat > now + MAX_IAT_FUTURE_SECONDS:
        raise AuthError(f"JWT claim 'iat' is {int(iat - now)} s in the future (more than {MAX_IAT_FUTURE_SECONDS} s)")
    if claims.get("method") != method:
        raise AuthError(f"JWT claim 'method' does not match the request method {method!r}")
    if claims.get("path") != path:
        raise AuthError(f"JWT claim 'path' does not match the request path {path!r} (it includes the /v1 prefix)")
    _check_query_params(claims, query)
    if "bodyHash" in claims:
        raise AuthError("JWT claim 'bodyHash' must be absent on a request without a body")


def _is_unix_seconds(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_query_params(claims: dict[str, object], query: Mapping[str, str]) -> None:
    if "queryParams" not in claims:
        if query:
            raise AuthError("JWT claim 'queryParams' is missing but the request has query parameters")
        return
    signed = claims["queryParams"]
    if not query:
        raise AuthError("JWT claim 'queryParams' must be absent when the request has no query parameters")
    if not isinstance(signed, dict) or not all(isinstance(value, str) for value in signed.values()):
        raise AuthError("JWT claim 'queryParams' must map each parameter name to its string value as sent")
    problems = [
        f"{label} {names}"
        for label, names in (
            ("not in the request:", sorted(set(signed) - set(query))),
            ("missing:", sorted(set(query) - set(signed))),
            ("different value:", sorted(name for name in set(signed) & set(query) if signed[name] != query[name])),
        )
        if names
    ]
    if problems:
        raise AuthError(f"JWT claim 'queryParams' does not match the request query ({'; '.join(problems)})")
