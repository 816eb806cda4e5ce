"""Attacks on the bearer access token: each is answered 401 with the JSON error shape.

The tokens are built with PyJWT from the app's own secret and issuer, starting from the claims of
a real token (so `fid` names a live session) and changing one thing at a time. The first test is
the control: the unchanged claims, re-signed the same way, are accepted, so every 401 below comes
from the one thing that was changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from apiflask import APIFlask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import Account

REQUIRED_CLAIMS = ["sub", "role", "jti", "fid", "exp", "iat", "nbf", "iss", "typ"]
FAKE_PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "-----END PUBLIC KEY-----\n"
)

Claims = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hmac_sha256(key: str | bytes, message: str) -> str:
    raw_key = key.encode() if isinstance(key, str) else key
    return b64url(hmac.new(raw_key, message.encode(), hashlib.sha256).digest())


def craft(header: dict[str, Any], claims: Claims, signature: str) -> str:
    """A compact JWS assembled by hand (no library checks what it says)."""
    return f"{b64url_json(header)}.{b64url_json(claims)}.{signature}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: TestResponse) -> dict[str, Any]:
    """401 with exactly the JSON error shape {code, message, description}."""
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.is_json
    body: dict[str, Any] = response.json
    assert set(body) == {"code", "message", "description"}
    assert body["code"] == 401
    assert body["message"] == "Unauthorized"
    assert isinstance(body["description"], str) and body["description"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return body


class Forge:
    """Builds tokens the way the app does, from a real session's claims."""

    def __init__(self, app: APIFlask, client: FlaskClient, account: Account) -> None:
        settings = app.config["SETTINGS"]
        self.secret: str = settings.jwt_secret_key
        self.issuer: str = settings.jwt_issuer
        response = client.post(
            "/login", json={"username": account.username, "password": account.password}
        )
        assert response.status_code == 200, response.json
        self.real_token: str = response.json["access_token"]
        self.refresh_token: str = response.json["refresh_token"]
        self.claims: Claims = jwt.decode(self.real_token, options={"verify_signature": False})

    def fresh_claims(self, **changes: Any) -> Claims:
        """The real claims, re-timed to now and changed as asked."""
        now = int(time.time())
        claims: Claims = {**self.claims, "iat": now, "nbf": now, "exp": now + 600}
        claims.update(changes)
        return claims

    def sign(
        self,
        claims: Claims | None = None,
        *,
        key: str | bytes | None = None,
        algorithm: str = "HS256",
        headers: dict[str, Any] | None = None,
    ) -> str:
        return jwt.encode(
            claims if claims is not None else self.fresh_claims(),
            key if key is not None else self.secret,
            algorithm=algorithm,
            headers=headers,
        )


@pytest.fixture
def forge(app: APIFlask, client: FlaskClient, alice: Account) -> Forge:
    return Forge(app, client, alice)


@pytest.fixture
def get_me(client: FlaskClient) -> Callable[[str], TestResponse]:
    def _get(token: str) -> TestResponse:
        return client.get("/me", headers=bearer(token))

    return _get


# --------------------------------------------------------------------------- control


def test_control_a_token_forged_with_the_apps_key_and_real_claims_is_accepted(
    forge: Forge, get_me: Callable[[str], TestResponse], alice: Account
) -> None:
    assert get_me(forge.real_token).status_code == 200

    response = get_me(forge.sign())

    assert response.status_code == 200, response.json
    assert response.json["id"] == alice.id


def test_control_a_hand_crafted_hs256_token_with_the_right_key_is_accepted(
    forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    """The manual assembly used by the attacks below produces real tokens when done honestly."""
    header = {"alg": "HS256", "typ": "JWT"}
    claims = forge.fresh_claims()
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"

    response = get_me(f"{signing_input}.{hmac_sha256(forge.secret, signing_input)}")

    assert response.status_code == 200, response.json


# --------------------------------------------------------------------------- the header


def test_no_authorization_header_is_refused(client: FlaskClient, forge: Forge) -> None:
    assert_unauthorized(client.get("/me"))


@pytest.mark.parametrize(
    "make_header",
    [
        lambda token: f"Basic {base64.b64encode(b'alice:correct horse battery').decode()}",
        lambda token: f"Token {token}",
        lambda token: f"JWT {token}",
        lambda token: token,
        lambda token: f"Bearer{token}",
        lambda token: "Bearer",
        lambda token: "Bearer ",
        lambda token: f"Bearer {token} {token}",
    ],
    ids=[
        "basic",
        "token",
        "jwt",
        "no-scheme",
        "no-space",
        "bearer-alone",
        "bearer-empty",
        "two-tokens",
    ],
)
def test_a_wrong_authorization_scheme_is_refused(
    client: FlaskClient, forge: Forge, make_header: Callable[[str], str]
) -> None:
    response = client.get("/me", headers={"Authorization": make_header(forge.real_token)})

    assert_unauthorized(response)


def test_a_token_in_another_header_is_ignored(client: FlaskClient, forge: Forge) -> None:
    assert_unauthorized(client.get("/me", headers={"X-Access-Token": forge.real_token}))


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b", "a.b.c", "a.b.c.d", "...", "e30.e30.", "e30.e30.e30", "%%%.%%%.%%%"],
)
def test_a_malformed_token_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], token: str
) -> None:
    assert_unauthorized(get_me(token))


def test_a_token_whose_header_is_not_json_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    header = b64url(b"not json")
    payload = b64url_json(forge.fresh_claims())
    signing_input = f"{header}.{payload}"

    assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(forge.secret, signing_input)}"))


def test_a_token_whose_payload_is_not_a_json_object_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    header = b64url_json({"alg": "HS256", "typ": "JWT"})
    signing_input = f"{header}.{b64url_json([1, 2, 3])}"

    assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(forge.secret, signing_input)}"))


# --------------------------------------------------------------------------- the algorithm


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "keep"], ids=["unsigned", "with-old-signature"])
def test_an_alg_none_token_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], alg: str, signature: str
) -> None:
    if signature == "keep":
        signature = forge.real_token.rsplit(".", 1)[1]
    token = craft({"alg": alg, "typ": "JWT"}, forge.fresh_claims(), signature)

    assert_unauthorized(get_me(token))


def test_an_alg_none_token_claiming_admin_is_refused(
    client: FlaskClient, forge: Forge, admin: Account
) -> None:
    token = craft({"alg": "none"}, forge.fresh_claims(role="admin"), "")

    assert_unauthorized(client.get("/admin/users", headers=bearer(token)))


def test_a_token_without_an_alg_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    header = b64url_json({"typ": "JWT"})
    signing_input = f"{header}.{b64url_json(forge.fresh_claims())}"

    assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(forge.secret, signing_input)}"))


@pytest.mark.parametrize(
    "key",
    ["wrong-key-that-is-still-long-enough-0123456", "", "mediaamp", "secret"],
    ids=["other-key", "empty-key", "issuer-as-key", "classic-guess"],
)
def test_an_hs256_token_signed_with_the_wrong_key_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], key: str
) -> None:
    # Signed by hand: PyJWT refuses to sign with an empty key, an attacker's script does not.
    header = b64url_json({"alg": "HS256", "typ": "JWT"})
    signing_input = f"{header}.{b64url_json(forge.fresh_claims())}"

    assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(key, signing_input)}"))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_only_hs256_is_accepted_even_with_the_right_key(
    forge: Forge, get_me: Callable[[str], TestResponse], algorithm: str
) -> None:
    assert_unauthorized(get_me(forge.sign(algorithm=algorithm)))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "EdDSA"])
def test_an_asymmetric_alg_header_is_refused_even_when_hmac_signed_with_the_secret(
    forge: Forge, get_me: Callable[[str], TestResponse], alg: str
) -> None:
    """RS/HS confusion from the other side: the signature is a valid HMAC with the real secret,
    but the header names another algorithm, which must not be honoured."""
    header = b64url_json({"alg": alg, "typ": "JWT"})
    signing_input = f"{header}.{b64url_json(forge.fresh_claims())}"

    assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(forge.secret, signing_input)}"))


def test_rs_hs_confusion_with_a_public_key_as_hmac_secret_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    """The classic confusion: HMAC-sign with a public key, hoping the server uses it as secret."""
    for alg in ("RS256", "HS256"):
        header = b64url_json({"alg": alg, "typ": "JWT"})
        signing_input = f"{header}.{b64url_json(forge.fresh_claims())}"
        token = f"{signing_input}.{hmac_sha256(FAKE_PUBLIC_KEY, signing_input)}"
        assert_unauthorized(get_me(token))


def test_a_real_rs256_token_is_refused(forge: Forge, get_me: Callable[[str], TestResponse]) -> None:
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert_unauthorized(get_me(forge.sign(key=private_key, algorithm="RS256")))  # type: ignore[arg-type]
    # And that key pair's public key used as an HMAC secret, under either alg (signed by hand:
    # PyJWT refuses to HMAC-sign with a PEM key).
    for alg in ("RS256", "HS256"):
        header = b64url_json({"alg": alg, "typ": "JWT"})
        signing_input = f"{header}.{b64url_json(forge.fresh_claims())}"
        assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(public_pem, signing_input)}"))


@pytest.mark.parametrize(
    "extra_header",
    [
        {"kid": "../../dev/null"},
        {"jku": "https://evil.example/jwks.json"},
        {"jwk": {"kty": "oct", "k": b64url(b"attacker-chosen-key-long-enough-for-hs256")}},
    ],
    ids=["kid", "jku", "jwk"],
)
def test_key_pointing_headers_do_not_let_an_attacker_choose_the_key(
    forge: Forge, get_me: Callable[[str], TestResponse], extra_header: dict[str, Any]
) -> None:
    token = forge.sign(key="attacker-chosen-key-long-enough-for-hs256", headers=extra_header)

    assert_unauthorized(get_me(token))


# --------------------------------------------------------------------------- the signature


def test_a_tampered_payload_promoting_to_admin_is_refused(
    client: FlaskClient, forge: Forge, admin: Account
) -> None:
    header, _, signature = forge.real_token.split(".")
    tampered = f"{header}.{b64url_json({**forge.claims, 'role': 'admin'})}.{signature}"

    assert_unauthorized(client.get("/admin/users", headers=bearer(tampered)))
    assert_unauthorized(client.get("/me", headers=bearer(tampered)))


def test_a_tampered_payload_impersonating_another_user_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], bob: Account
) -> None:
    header, _, signature = forge.real_token.split(".")
    tampered = f"{header}.{b64url_json({**forge.claims, 'sub': str(bob.id)})}.{signature}"

    assert_unauthorized(get_me(tampered))


def test_a_tampered_expiry_is_refused(forge: Forge, get_me: Callable[[str], TestResponse]) -> None:
    header, _, signature = forge.real_token.split(".")
    extended = {**forge.claims, "exp": forge.claims["exp"] + 365 * 24 * 3600}

    assert_unauthorized(get_me(f"{header}.{b64url_json(extended)}.{signature}"))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"),
        lambda s: "",
        lambda s: s[: len(s) // 2],
        lambda s: s + "AAAA",
    ],
    ids=["flipped", "stripped", "truncated", "extended"],
)
def test_a_mangled_signature_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], mangle: Callable[[str], str]
) -> None:
    header, payload, signature = forge.real_token.split(".")

    assert_unauthorized(get_me(f"{header}.{payload}.{mangle(signature)}"))


# --------------------------------------------------------------------------- time claims


@pytest.mark.parametrize(
    "seconds_ago", [0, 1, 3600], ids=["exp-is-now", "just-expired", "long-ago"]
)
def test_an_expired_token_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], seconds_ago: int
) -> None:
    now = int(time.time())
    claims = forge.fresh_claims(iat=now - 7200, nbf=now - 7200, exp=now - seconds_ago)

    body = assert_unauthorized(get_me(forge.sign(claims)))

    assert "expired" in body["description"]


def test_a_token_not_yet_valid_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    claims = forge.fresh_claims(nbf=int(time.time()) + 120)

    body = assert_unauthorized(get_me(forge.sign(claims)))

    assert "not yet valid" in body["description"]


def test_a_token_issued_in_the_future_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    claims = forge.fresh_claims(iat=int(time.time()) + 120)

    assert_unauthorized(get_me(forge.sign(claims)))


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["soon", "", None, [1], 1e400], ids=repr)
def test_a_time_claim_that_is_not_a_number_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], claim: str, value: object
) -> None:
    claims = forge.fresh_claims(**{claim: value})
    # PyJWT would refuse to encode inf; sign the JSON by hand.
    header = b64url_json({"alg": "HS256", "typ": "JWT"})
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}"

    assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(forge.secret, signing_input)}"))


# --------------------------------------------------------------------------- required claims


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_a_token_missing_a_required_claim_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], claim: str
) -> None:
    claims = forge.fresh_claims()
    del claims[claim]

    assert_unauthorized(get_me(forge.sign(claims)))


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_a_token_with_a_null_required_claim_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], claim: str
) -> None:
    claims = forge.fresh_claims(**{claim: None})
    header = b64url_json({"alg": "HS256", "typ": "JWT"})
    signing_input = f"{header}.{b64url_json(claims)}"

    assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(forge.secret, signing_input)}"))


# --------------------------------------------------------------------------- the subject


def _non_ascii_digits(number: int, zero: str) -> str:
    """`number` written with another script's digits (e.g. Arabic-Indic), which Python's
    str.isdigit() and int() accept."""
    return "".join(chr(ord(zero) + int(d)) for d in str(number))


@pytest.mark.parametrize(
    "make_sub",
    [
        lambda uid: "abc",
        lambda uid: "",
        lambda uid: f"-{uid}",
        lambda uid: f"{uid}.0",
        lambda uid: f"{uid}e0",
        lambda uid: f" {uid}",
        lambda uid: f"{uid}\n",
        lambda uid: f"+{uid}",
        lambda uid: f"0x{uid}",
        lambda uid: f"{uid}²",
        lambda uid: _non_ascii_digits(uid, "\u0660"),
        lambda uid: _non_ascii_digits(uid, "\uff10"),
        lambda uid: "9" * 30,
        lambda uid: str(2**31),
        lambda uid: f"0{uid}",
        lambda uid: "alice",
    ],
    ids=[
        "letters",
        "empty",
        "negative",
        "decimal",
        "exponent",
        "leading-space",
        "trailing-newline",
        "plus-sign",
        "hex",
        "superscript",
        "arabic-indic-digits",
        "fullwidth-digits",
        "huge",
        "beyond-int32",
        "leading-zero",
        "username",
    ],
)
def test_a_non_numeric_subject_is_refused(
    forge: Forge,
    get_me: Callable[[str], TestResponse],
    alice: Account,
    make_sub: Callable[[int], str],
) -> None:
    assert_unauthorized(get_me(forge.sign(forge.fresh_claims(sub=make_sub(alice.id)))))


@pytest.mark.parametrize("value", ["int", "list", "object"])
def test_a_subject_that_is_not_a_string_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], alice: Account, value: str
) -> None:
    sub = {"int": alice.id, "list": [str(alice.id)], "object": {"id": alice.id}}[value]

    assert_unauthorized(get_me(forge.sign(forge.fresh_claims(sub=sub))))


def test_a_token_for_a_user_id_that_does_not_exist_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], alice: Account
) -> None:
    assert_unauthorized(get_me(forge.sign(forge.fresh_claims(sub=str(alice.id + 1000)))))


def test_a_token_pairing_one_user_with_another_users_session_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], bob: Account
) -> None:
    """Even signed with the right key, `fid` must belong to `sub`."""
    assert_unauthorized(get_me(forge.sign(forge.fresh_claims(sub=str(bob.id)))))


# --------------------------------------------------------------------------- issuer, type, family


@pytest.mark.parametrize(
    "issuer",
    ["someone-else", "", "MEDIAAMP", "mediaamp ", None, ["mediaamp"]],
    ids=["other", "empty", "upper-case", "trailing-space", "null", "list"],
)
def test_a_wrong_issuer_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], issuer: object
) -> None:
    claims = forge.fresh_claims(iss=issuer)
    header = b64url_json({"alg": "HS256", "typ": "JWT"})
    signing_input = f"{header}.{b64url_json(claims)}"

    assert_unauthorized(get_me(f"{signing_input}.{hmac_sha256(forge.secret, signing_input)}"))


@pytest.mark.parametrize("typ", ["refresh", "Access", "ACCESS", "", "id", None, ["access"]])
def test_a_token_that_is_not_an_access_token_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], typ: object
) -> None:
    assert_unauthorized(get_me(forge.sign(forge.fresh_claims(typ=typ))))


@pytest.mark.parametrize(
    "fid",
    [str(uuid.uuid4()), "", "' OR '1'='1", 12345, ["x"]],
    ids=["unknown-uuid", "empty", "sql-injection", "number", "list"],
)
def test_a_token_of_an_unknown_session_is_refused(
    forge: Forge, get_me: Callable[[str], TestResponse], fid: object
) -> None:
    assert_unauthorized(get_me(forge.sign(forge.fresh_claims(fid=fid))))


def test_a_revoked_token_is_refused(
    client: FlaskClient, forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    assert client.post("/logout", headers=bearer(forge.real_token)).status_code == 204

    assert_unauthorized(get_me(forge.real_token))
    # A brand-new token for the revoked session, correctly signed, is just as dead.
    assert_unauthorized(get_me(forge.sign()))


def test_a_token_of_a_session_revoked_for_reuse_is_refused(
    client: FlaskClient, forge: Forge, get_me: Callable[[str], TestResponse]
) -> None:
    assert (
        client.post("/token/refresh", json={"refresh_token": forge.refresh_token}).status_code
        == 200
    )
    assert (
        client.post("/token/refresh", json={"refresh_token": forge.refresh_token}).status_code
        == 401
    )

    assert_unauthorized(get_me(forge.real_token))


# --------------------------------------------------------------------------- the role claim


def test_a_validly_signed_admin_role_claim_grants_nothing(
    client: FlaskClient, forge: Forge, admin: Account
) -> None:
    """The role is read from the database, never from the token: a token that claims `admin`
    for a plain user is authenticated as that plain user and forbidden admin endpoints."""
    token = forge.sign(forge.fresh_claims(role="admin"))

    assert client.get("/me", headers=bearer(token)).json["role"] == "user"
    response = client.get("/admin/users", headers=bearer(token))
    assert response.status_code == 403
    assert set(response.json) >= {"code", "message", "description"}


# --------------------------------------------------------------------------- every protected route


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/me"),
        ("PATCH", "/me"),
        ("POST", "/logout"),
        ("GET", "/tasks"),
        ("GET", "/admin/users"),
        ("GET", "/admin/dashboard"),
    ],
)
def test_protected_routes_refuse_a_forged_token(
    client: FlaskClient, forge: Forge, admin: Account, method: str, path: str
) -> None:
    token = forge.sign(key="wrong-key-that-is-still-long-enough-0123456")

    response = client.open(path, method=method, headers=bearer(token), json={})

    assert_unauthorized(response)
