"""NoahConfig.from_env and signing-key loading: every refusal names the variable, never the secret."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from balances_etl.noah import ConfigError, NoahConfig
from balances_etl.noah.config import SANDBOX_BASE_URL

SANDBOX_KEY = "apikey_sandbox_0123456789abcdef"
PROD_KEY = "apikey_prod_fedcba9876543210"
SEC1 = serialization.PrivateFormat.TraditionalOpenSSL
PKCS8 = serialization.PrivateFormat.PKCS8


def private_pem(key: object, fmt: serialization.PrivateFormat = SEC1, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)  # type: ignore[attr-defined]


def pem_body_line(pem: bytes) -> str:
    """A distinctive line of base64 from inside the PEM, to prove it is never echoed."""
    return pem.decode().splitlines()[1]


@pytest.fixture(scope="module")
def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        NoahConfig.from_env(environ)
    return caught.value


def assert_not_echoed(error: ConfigError, *secrets: str) -> None:
    for text in (str(error), repr(error)):
        for secret in secrets:
            assert secret not in text


# defaults and environment


def test_minimal_environment_gives_documented_defaults() -> None:
    config = NoahConfig.from_env({"NOAH_API_KEY": SANDBOX_KEY})
    documented = {row.variable: row.default for row in NoahConfig.documented_variables()}
    assert config.base_url == SANDBOX_BASE_URL == documented["NOAH_BASE_URL"]
    assert config.environment == "sandbox"
    assert config.signing_key is None and config.signing_algorithm is None
    assert (config.page_size, config.max_pages, config.max_attempts) == (100, 10_000, 6)
    assert (config.connect_timeout_seconds, config.read_timeout_seconds) == (10, 60)
    assert (config.retry_after_cap_seconds, config.retry_budget_seconds) == (300, 900)
    assert (config.backoff_base_seconds, config.backoff_max_seconds) == (0.5, 30)
    for row in NoahConfig.documented_variables():
        value = getattr(config, row.variable.removeprefix("NOAH_").lower(), None)
        if isinstance(value, (int, float)):
            assert f"{value:g}" == row.default


def test_documented_variables_cover_everything_from_env_reads() -> None:
    rows = NoahConfig.documented_variables()
    names = [row.variable for row in rows]
    assert len(names) == len(set(names))
    assert all(row.meaning for row in rows)
    tunable_fields = {f.name for f in dataclasses.fields(NoahConfig)} - {"api_key", "signing_key", "base_url"}
    assert {f"NOAH_{name.upper()}" for name in tunable_fields} | {
        "NOAH_API_KEY", "NOAH_SIGNING_KEY_PATH", "NOAH_SIGNING_KEY", "NOAH_BASE_URL"
    } == set(names)


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOAH_API_KEY", SANDBOX_KEY)
    monkeypatch.setenv("NOAH_PAGE_SIZE", "25")
    assert NoahConfig.from_env().page_size == 25


@pytest.mark.parametrize("environ", [{}, {"NOAH_API_KEY": ""}, {"NOAH_API_KEY": "   "}])
def test_missing_api_key_is_refused(environ: dict[str, str]) -> None:
    error = config_error(environ)
    assert error.variable == "NOAH_API_KEY" and "NOAH_API_KEY" in str(error)


@pytest.mark.parametrize("bad_key", ["apikey_sandbox_with space", "apikey_sandbox_\r\nX-Evil: 1", "apikey_sandbox_é"])
def test_api_key_that_would_break_the_header_is_refused_without_echo(bad_key: str) -> None:
    error = config_error({"NOAH_API_KEY": bad_key})
    assert error.variable == "NOAH_API_KEY"
    assert_not_echoed(error, bad_key, bad_key.split("_")[-1])


def test_empty_variables_mean_default() -> None:
    config = NoahConfig.from_env({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_PAGE_SIZE": "", "NOAH_BASE_URL": " "})
    assert config.page_size == 100 and config.base_url == SANDBOX_BASE_URL


def test_repr_and_str_never_show_the_key_or_pem(tmp_path: Path, p384: ec.EllipticCurvePrivateKey) -> None:
    pem = private_pem(p384)
    path = tmp_path / "signing.pem"
    path.write_bytes(pem)
    config = NoahConfig.from_env({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_SIGNING_KEY_PATH": str(path)})
    for text in (repr(config), str(config)):
        assert SANDBOX_KEY not in text and "0123456789abcdef" not in text
        assert pem_body_line(pem) not in text and "PRIVATE KEY" not in text
    assert "apikey_sandbox_***" in str(config) and "ES384" in str(config) and "sandbox" in str(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.page_size = 5  # type: ignore[misc]


def test_unprefixed_key_is_fully_masked() -> None:
    config = NoahConfig.from_env({"NOAH_API_KEY": "custom-key-123456"})
    assert config.masked_api_key == "***" and "custom" not in str(config)


# signing keys


@pytest.mark.parametrize("fmt", [SEC1, PKCS8], ids=["sec1", "pkcs8"])
@pytest.mark.parametrize("curve, algorithm", [(ec.SECP384R1, "ES384"), (ec.SECP256R1, "ES256")])
def test_signing_key_path_and_text_in_both_pem_formats(
    tmp_path: Path, fmt: serialization.PrivateFormat, curve: type[ec.EllipticCurve], algorithm: str
) -> None:
    key = ec.generate_private_key(curve())
    pem = private_pem(key, fmt)
    assert (b"BEGIN EC PRIVATE KEY" if fmt is SEC1 else b"BEGIN PRIVATE KEY") in pem
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    from_path = NoahConfig.from_env({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_SIGNING_KEY_PATH": str(path)})
    from_text = NoahConfig.from_env({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_SIGNING_KEY": pem.decode()})
    for config in (from_path, from_text):
        assert config.signing_algorithm == algorithm
        assert config.signing_key.private_numbers() == key.private_numbers()  # type: ignore[union-attr]


def test_signing_key_text_with_escaped_newlines(p384: ec.EllipticCurvePrivateKey) -> None:
    one_line = private_pem(p384).decode().strip().replace("\n", "\\n")
    config = NoahConfig.from_env({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_SIGNING_KEY": one_line})
    assert config.signing_algorithm == "ES384"


def test_both_signing_variables_are_ambiguous(tmp_path: Path, p384: ec.EllipticCurvePrivateKey) -> None:
    pem = private_pem(p384)
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    error = config_error({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_SIGNING_KEY_PATH": str(path), "NOAH_SIGNING_KEY": pem.decode()})
    assert "NOAH_SIGNING_KEY_PATH" in str(error) and "NOAH_SIGNING_KEY" in str(error)
    assert_not_echoed(error, pem_body_line(pem))


@pytest.mark.parametrize("make_path", [lambda tmp: tmp / "missing.pem", lambda tmp: tmp], ids=["missing", "directory"])
def test_unreadable_signing_key_path_names_variable_and_path(tmp_path: Path, make_path) -> None:  # noqa: ANN001
    path = make_path(tmp_path)
    error = config_error({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_SIGNING_KEY_PATH": str(path)})
    assert error.variable == "NOAH_SIGNING_KEY_PATH"
    assert "NOAH_SIGNING_KEY_PATH" in str(error) and str(path) in str(error)


def test_oversized_signing_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.pem"
    path.write_bytes(b"A" * 200_000)
    error = config_error({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_SIGNING_KEY_PATH": str(path)})
    assert error.variable == "NOAH_SIGNING_KEY_PATH" and "AAAAAAAA" not in str(error)


def _rejected_pems() -> dict[str, tuple[bytes, str]]:
    """(PEM, a word the message must contain) for keys NOAH cannot use."""
    p384 = ec.generate_private_key(ec.SECP384R1())
    garbage = b"-----BEGIN EC PRIVATE KEY-----\nTm90QUtleUF0QWxsSnVzdFNvbWVCeXRlc1RoYXRMb29rTGlrZUJhc2U2NA==\n-----END EC PRIVATE KEY-----\n"
    return {
        "garbage": (garbage, "not an unencrypted PEM private key"),
        "not-pem": (b"this is not a key at all, just a distinctive sentence", "not an unencrypted PEM private key"),
        "rsa": (private_pem(rsa.generate_private_key(65537, 2048), PKCS8), "RSA"),
        "p521": (private_pem(ec.generate_private_key(ec.SECP521R1())), "secp521r1"),
        "encrypted": (private_pem(p384, PKCS8, password=b"hunter2-password"), "not an unencrypted PEM private key"),
        "public-only": (
            p384.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            "not an unencrypted PEM private key",
        ),
    }


REJECTED_PEMS = _rejected_pems()


@pytest.mark.parametrize("variable", ["NOAH_SIGNING_KEY_PATH", "NOAH_SIGNING_KEY"])
@pytest.mark.parametrize("case", sorted(REJECTED_PEMS))
def test_unusable_signing_key_is_refused_without_echoing_it(tmp_path: Path, variable: str, case: str) -> None:
    pem, expected_reason = REJECTED_PEMS[case]
    if variable == "NOAH_SIGNING_KEY_PATH":
        path = tmp_path / "key.pem"
        path.write_bytes(pem)
        value = str(path)
    else:
        value = pem.decode()
    error = config_error({"NOAH_API_KEY": SANDBOX_KEY, variable: value})
    assert error.variable == variable and variable in str(error)
    assert expected_reason in str(error)
    lines = pem.decode().splitlines()
    assert_not_echoed(error, lines[1] if len(lines) > 2 else lines[0], "distinctive sentence")
    assert error.__cause__ is None and error.__suppress_context__


def test_signing_key_object_is_checked_when_built_in_code() -> None:
    with pytest.raises(ConfigError, match="secp521r1") as caught:
        NoahConfig(api_key=SANDBOX_KEY, signing_key=ec.generate_private_key(ec.SECP521R1()))
    assert caught.value.variable == "NOAH_SIGNING_KEY"


# production safety


def test_production_key_without_signing_key_is_refused() -> None:
    error = config_error({"NOAH_API_KEY": PROD_KEY, "NOAH_BASE_URL": "http://127.0.0.1:9/v1"})
    assert "NOAH_SIGNING_KEY_PATH" in str(error)
    assert_not_echoed(error, PROD_KEY, "fedcba9876543210")


def test_production_host_without_signing_key_is_refused() -> None:
    error = config_error({"NOAH_API_KEY": "custom-key-123456", "NOAH_BASE_URL": "https://api.noah.com/v1"})
    assert "production requires signed requests" in str(error)


def test_production_key_with_signing_key(p384: ec.EllipticCurvePrivateKey) -> None:
    config = NoahConfig.from_env(
        {"NOAH_API_KEY": PROD_KEY, "NOAH_SIGNING_KEY": private_pem(p384).decode(), "NOAH_BASE_URL": "https://api.noah.com/v1/"}
    )
    assert config.environment == "production" and config.base_url == "https://api.noah.com/v1"


@pytest.mark.parametrize(
    "api_key, base_url",
    [(PROD_KEY, "https://api.sandbox.noah.com/v1"), (SANDBOX_KEY, "https://api.noah.com/v1")],
)
def test_key_of_the_other_environment_is_refused(p384: ec.EllipticCurvePrivateKey, api_key: str, base_url: str) -> None:
    error = config_error({"NOAH_API_KEY": api_key, "NOAH_BASE_URL": base_url, "NOAH_SIGNING_KEY": private_pem(p384).decode()})
    assert error.variable == "NOAH_BASE_URL"
    assert_not_echoed(error, api_key)


# base URL


@pytest.mark.parametrize(
    "url, normalised",
    [
        ("https://api.sandbox.noah.com/v1/", "https://api.sandbox.noah.com/v1"),
        ("HTTPS://api.sandbox.noah.com/v1", "https://api.sandbox.noah.com/v1"),
        ("https://gateway.example.com:8443/noah/v1", "https://gateway.example.com:8443/noah/v1"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("http://127.9.9.9/v1//", "http://127.9.9.9/v1"),
        ("http://localhost:1234/v1", "http://localhost:1234/v1"),
        ("http://[::1]:1234/v1", "http://[::1]:1234/v1"),
    ],
)
def test_base_url_is_normalised(url: str, normalised: str) -> None:
    assert NoahConfig.from_env({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_BASE_URL": url}).base_url == normalised


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://api.sandbox.noah.com/v1", "must use https"),
        ("http://10.0.0.1/v1", "must use https"),
        ("http://localhost.example.com/v1", "must use https"),
        ("ftp://api.sandbox.noah.com/v1", "must start with https://"),
        ("api.sandbox.noah.com/v1", "must start with https://"),
        ("https:///v1", "has no host"),
        ("https://api.sandbox.noah.com", "must end with /v1"),
        ("https://api.sandbox.noah.com/v2", "must end with /v1"),
        ("https://api.sandbox.noah.com/v1?x=1", "query or fragment"),
        ("https://api.sandbox.noah.com/v1#frag", "query or fragment"),
        ("https://user:s3cr3t-pass@api.sandbox.noah.com/v1", "credentials"),
        ("https://api.sandbox.noah.com:99999/v1", "not a valid URL"),
        ("https://[::1/v1", "not a valid URL"),
    ],
)
def test_malformed_base_url_is_refused_without_echo(url: str, reason: str) -> None:
    error = config_error({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_BASE_URL": url})
    assert error.variable == "NOAH_BASE_URL" and "NOAH_BASE_URL" in str(error) and reason in str(error)
    assert_not_echoed(error, "s3cr3t-pass", *([url] if url not in SANDBOX_BASE_URL else []))


# tunables

NUMERIC_ROWS = [row for row in NoahConfig.documented_variables() if row.default[0].isdigit()]


@pytest.mark.parametrize("row", NUMERIC_ROWS, ids=[row.variable for row in NUMERIC_ROWS])
@pytest.mark.parametrize("bad", ["abc", "-1", "nan", "inf", "1e3", "1_000", "١٢", "0x10"])
def test_non_numeric_tunable_is_refused_naming_the_variable(row, bad: str) -> None:  # noqa: ANN001
    error = config_error({"NOAH_API_KEY": SANDBOX_KEY, row.variable: bad})
    assert error.variable == row.variable and row.variable in str(error)
    assert bad not in str(error)


@pytest.mark.parametrize(
    "variable, value",
    [
        ("NOAH_PAGE_SIZE", "0"),
        ("NOAH_PAGE_SIZE", "101"),
        ("NOAH_PAGE_SIZE", "2.5"),
        ("NOAH_MAX_PAGES", "0"),
        ("NOAH_MAX_ATTEMPTS", "0"),
        ("NOAH_CONNECT_TIMEOUT_SECONDS", "0"),
        ("NOAH_READ_TIMEOUT_SECONDS", "0"),
        ("NOAH_READ_TIMEOUT_SECONDS", "100000"),
        ("NOAH_RETRY_BUDGET_SECONDS", "1000000"),
    ],
)
def test_out_of_range_tunable_is_refused(variable: str, value: str) -> None:
    error = config_error({"NOAH_API_KEY": SANDBOX_KEY, variable: value})
    assert error.variable == variable and variable in str(error)


def test_tunables_parse_to_their_types() -> None:
    config = NoahConfig.from_env(
        {
            "NOAH_API_KEY": SANDBOX_KEY,
            "NOAH_PAGE_SIZE": " 1 ",
            "NOAH_MAX_PAGES": "3",
            "NOAH_MAX_ATTEMPTS": "1",
            "NOAH_CONNECT_TIMEOUT_SECONDS": "0.25",
            "NOAH_READ_TIMEOUT_SECONDS": ".5",
            "NOAH_RETRY_AFTER_CAP_SECONDS": "0",
            "NOAH_RETRY_BUDGET_SECONDS": "7.",
            "NOAH_BACKOFF_BASE_SECONDS": "0",
            "NOAH_BACKOFF_MAX_SECONDS": "0",
        }
    )
    assert (config.page_size, config.max_pages, config.max_attempts) == (1, 3, 1)
    assert (config.connect_timeout_seconds, config.read_timeout_seconds) == (0.25, 0.5)
    assert (config.retry_after_cap_seconds, config.retry_budget_seconds) == (0, 7)
    assert (config.backoff_base_seconds, config.backoff_max_seconds) == (0, 0)


def test_backoff_max_below_base_is_refused() -> None:
    error = config_error({"NOAH_API_KEY": SANDBOX_KEY, "NOAH_BACKOFF_BASE_SECONDS": "5", "NOAH_BACKOFF_MAX_SECONDS": "1"})
    assert error.variable == "NOAH_BACKOFF_MAX_SECONDS"


def test_replace_revalidates() -> None:
    config = NoahConfig(api_key=SANDBOX_KEY)
    assert dataclasses.replace(config, read_timeout_seconds=0.2).read_timeout_seconds == 0.2
    with pytest.raises(ConfigError, match="NOAH_PAGE_SIZE"):
        dataclasses.replace(config, page_size=500)
    with pytest.raises(ConfigError, match="NOAH_MAX_ATTEMPTS"):
        dataclasses.replace(config, max_attempts=True)


def test_config_error_survives_pickling() -> None:
    error = config_error({})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ConfigError and str(copy) == str(error) and copy.variable == "NOAH_API_KEY"
