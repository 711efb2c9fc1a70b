"""Authlib's OAuth 2.0 client, unchanged, authenticating with private_key_jwt (RFC 7523) at the
token, introspection (RFC 7662) and revocation (RFC 7009) endpoints. Used by tests/it/oauth.rs.

  authlib_introspect.py BASE KEYDIR      (KEYDIR from backend_client.py keys)
Prints "ok" on success; any failed expectation raises.
"""
import sys
import time

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey, RSAKey

BASE, KEYS = sys.argv[1], sys.argv[2]
TOKEN, INTROSPECT, REVOKE = BASE + "/oauth/token", BASE + "/oauth/introspect", BASE + "/oauth/revoke"
P384 = ECKey.import_key(open(f"{KEYS}/p384.pem", "rb").read())
RSA = RSAKey.import_key(open(f"{KEYS}/rsa.pem", "rb").read())


def session(endpoint=None, alg="ES384", kid="k384", key=P384, short=True):
    """A session whose client assertion names `endpoint` as `aud` (default: the URL called).

    SMART Backend Services: an assertion expires at most five minutes ahead, and Authlib's
    default is an hour, so `exp` is set through Authlib's `claims` option. Authlib writes the
    `jti` it generates into that same dict, so a fresh one is given to every session (one
    request each) — else the second request would replay the first's `jti`.
    """
    claims = {"exp": int(time.time()) + 240} if short else None
    auth = PrivateKeyJWT(endpoint, alg=alg, headers={"kid": kid}, claims=claims)
    return OAuth2Session("backend", key, token_endpoint_auth_method=auth, revocation_endpoint_auth_method=auth,
                         scope="system/Patient.rs")


token = session().fetch_token(TOKEN, grant_type="client_credentials")
assert token["token_type"].lower() == "bearer" and token["scope"] == "system/Patient.rs", token
access = token["access_token"]
info = session().introspect_token(INTROSPECT, token=access).json()
assert info.get("active") is True, info
assert info["client_id"] == "backend" and info["scope"] == "system/Patient.rs", info

# `aud` = the token endpoint at every endpoint, as many deployments configure it.
assert session(TOKEN).introspect_token(INTROSPECT, token=access).json()["active"] is True

# Authlib's default lifetime (an hour) is refused with a clear invalid_client.
r = session(short=False).introspect_token(INTROSPECT, token=access)
assert r.status_code == 401 and "five minutes" in r.json()["error_description"], r.text
# Authlib's default algorithm (RS256) is not one SMART Backend Services allows.
r = session(alg="RS256", kid="krsa", key=RSA).introspect_token(INTROSPECT, token=access)
assert r.status_code == 401 and r.json()["error"] == "invalid_client", (r.status_code, r.text)

# Revoked: introspection says inactive, and nothing more.
r = session().revoke_token(REVOKE, token=access)
assert r.status_code == 200, r.text
info = session().introspect_token(INTROSPECT, token=access).json()
assert info == {"active": False}, info
print("ok")
