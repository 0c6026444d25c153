"""NOAH request signatures: an ES384/ES256 JWT in the ``Api-Signature`` header.

Claims follow docs.noah.com/api-concepts/authentication/signing. A fresh token is signed for every
attempt so a retry after a long wait never sends an expired or replayed token.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_private_key

AUDIENCE = "https://api.noah.com"  # the same in sandbox
TOKEN_LIFETIME_SECONDS = 300  # NOAH allows 15 min; 5 min leaves room for clock skew either way
ALGORITHM_BY_CURVE = {"secp384r1": "ES384", "secp256r1": "ES256"}
_HASH_BY_ALGORITHM = {"ES384": hashes.SHA384, "ES256": hashes.SHA256}


def load_private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Parse an unencrypted SEC1 or PKCS#8 PEM EC key on P-384 or P-256.

    Raises ValueError with a reason that never quotes the PEM.
    """
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The library's message can describe the data; ours only says what was expected.
        raise ValueError(
            "is not an unencrypted PEM private key (expected 'BEGIN EC PRIVATE KEY' or 'BEGIN PRIVATE KEY')"
        ) from None
    algorithm_for(key)
    return key  # type: ignore[return-value]  # algorithm_for checked the type


def algorithm_for(key: object) -> str:
    """JWT algorithm for an EC key: ES384 for P-384, ES256 for P-256; ValueError otherwise."""
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.removesuffix("PrivateKey")
        raise ValueError(f"is a {kind} key, not an EC key; NOAH needs an EC P-384 or P-256 key")
    algorithm = ALGORITHM_BY_CURVE.get(key.curve.name)
    if algorithm is None:
        raise ValueError(f"uses curve {key.curve.name}; NOAH accepts P-384 (ES384) or P-256 (ES256)")
    return algorithm


class RequestSigner:
    """Signs one request at a time; holds the key, never exposes it in repr."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, *, clock: Callable[[], float] = time.time) -> None:
        self.algorithm = algorithm_for(private_key)
        self._key = private_key
        self._clock = clock
        self._ecdsa = ec.ECDSA(_HASH_BY_ALGORITHM[self.algorithm]())
        self._scalar_bytes = (private_key.curve.key_size + 7) // 8
        self._header = _b64url(_compact_json({"alg": self.algorithm, "typ": "JWT"}))

    def __repr__(self) -> str:
        return f"RequestSigner(algorithm={self.algorithm!r})"

    def claims(self, method: str, path: str, query: Mapping[str, str] | None) -> dict[str, object]:
        """The exact claim set for one request; ``query`` as sent on the wire, omitted when empty."""
        issued_at = int(self._clock())
        claims: dict[str, object] = {
            "aud": AUDIENCE,
            "iat": issued_at,
            "exp": issued_at + TOKEN_LIFETIME_SECONDS,
            "method": method,
            "path": path,
        }
        if query:
            claims["queryParams"] = dict(query)
        return claims

    def sign(self, method: str, path: str, query: Mapping[str, str] | None) -> str:
        """A new JWT for this request (ECDSA is randomised, so even identical claims give a new token).

        Built here rather than with PyJWT (which the tests and the emulator use to verify): the same
        JWS compact form, a third cheaper per page. The signature is JWS's raw ``r || s``, not DER.
        """
        signing_input = self._header + b"." + _b64url(_compact_json(self.claims(method, path, query)))
        r, s = decode_dss_signature(self._key.sign(signing_input, self._ecdsa))
        raw = r.to_bytes(self._scalar_bytes, "big") + s.to_bytes(self._scalar_bytes, "big")
        return (signing_input + b"." + _b64url(raw)).decode("ascii")


def _compact_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
