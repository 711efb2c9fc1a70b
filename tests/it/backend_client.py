"""A SMART Backend Services client as an outside program would write it: PyJWT + cryptography +
requests, unchanged. Used by tests/it/oauth.rs.

  backend_client.py keys DIR        generate keys; write DIR/jwks.json (public) and DIR/*.pem
  backend_client.py flow BASE DIR   authenticate with private_key_jwt and try every forgery
Prints "ok" on success; any failed expectation raises.
"""
import base64
import hashlib
import hmac
import json
import sys
import time
import uuid

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CLIENT = "backend"


def pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_jwk(key, kid, alg):
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def keys(d):
    p384 = ec.generate_private_key(ec.SECP384R1())
    p256 = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = ec.generate_private_key(ec.SECP384R1())
    for name, k in [("p384", p384), ("p256", p256), ("rsa", rsa_key), ("stranger", stranger)]:
        open(f"{d}/{name}.pem", "wb").write(pem(k))
    jwks = {"keys": [public_jwk(p384, "k384", "ES384"), public_jwk(p256, "k256", "ES256"), public_jwk(rsa_key, "krsa", "RS384")]}
    json.dump(jwks, open(f"{d}/jwks.json", "w"))
    # The public key as PEM, for the HS256 key-confusion attempt.
    open(f"{d}/p384-public.pem", "wb").write(
        p384.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    print("ok")


def load(d, name):
    return serialization.load_pem_private_key(open(f"{d}/{name}.pem", "rb").read(), password=None)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def flow(base, d):
    token_url = f"{base}/oauth/token"
    now = int(time.time())

    def claims(**over):
        c = {"iss": CLIENT, "sub": CLIENT, "aud": token_url, "exp": now + 240, "jti": str(uuid.uuid4())}
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def post(assertion, scope="system/Patient.rs", extra=None):
        data = {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        data.update(extra or {})
        return requests.post(token_url, data=data, timeout=30)

    def expect(r, status, error):
        assert r.status_code == status, (r.status_code, r.text)
        assert r.json()["error"] == error, r.text

    # Discovery says what we use.
    smart = requests.get(f"{base}/fhir/.well-known/smart-configuration", timeout=30).json()
    assert "private_key_jwt" in smart["token_endpoint_auth_methods_supported"], smart
    assert "client-confidential-asymmetric" in smart["capabilities"], smart
    assert set(smart["token_endpoint_auth_signing_alg_values_supported"]) == {"ES256", "ES384", "RS384"}

    p384, p256, rsa_key, stranger = (load(d, n) for n in ["p384", "p256", "rsa", "stranger"])
    # The three algorithms SMART Backend Services require.
    for key, alg, kid in [(p384, "ES384", "k384"), (p256, "ES256", "k256"), (rsa_key, "RS384", "krsa")]:
        r = post(jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid}))
        assert r.status_code == 200, (alg, r.status_code, r.text)
        tok = r.json()
        assert tok["token_type"] == "Bearer" and tok["scope"] == "system/Patient.rs", tok
        fhir = requests.get(f"{base}/fhir/Patient?_id=nobody", headers={"Authorization": f"Bearer {tok['access_token']}"}, timeout=30)
        assert fhir.status_code == 200, fhir.text
    # Without a kid, the registered keys of the right family are tried.
    assert post(jwt.encode(claims(), p384, algorithm="ES384")).status_code == 200

    # Replay: the same assertion twice.
    once = jwt.encode(claims(), p384, algorithm="ES384", headers={"kid": "k384"})
    assert post(once).status_code == 200
    expect(post(once), 400, "invalid_grant")

    # Forgeries and mistakes: each refused.
    refused = {
        "wrong audience": jwt.encode(claims(aud=f"{base}/somewhere-else"), p384, algorithm="ES384"),
        "expired": jwt.encode(claims(exp=now - 300), p384, algorithm="ES384"),
        "exp too far ahead": jwt.encode(claims(exp=now + 3600), p384, algorithm="ES384"),
        "iss is not sub": jwt.encode(claims(sub="someone-else"), p384, algorithm="ES384"),
        "no jti": jwt.encode(claims(jti=None), p384, algorithm="ES384"),
        "no exp": jwt.encode(claims(exp=None), p384, algorithm="ES384"),
        "unregistered key": jwt.encode(claims(), stranger, algorithm="ES384"),
        "unknown kid": jwt.encode(claims(), p384, algorithm="ES384", headers={"kid": "nope"}),
        "RS256 not accepted": jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "krsa"}),
        "alg none": jwt.encode(claims(), None, algorithm="none"),
        "unknown client": jwt.encode(claims(iss="nobody", sub="nobody"), p384, algorithm="ES384"),
        "garbage": "not.a.jwt",
        # RFC 7523 §3: not yet valid (issue #22).
        "nbf in the future": jwt.encode(claims(nbf=now + 120), p384, algorithm="ES384"),
        "iat in the future": jwt.encode(claims(iat=now + 120), p384, algorithm="ES384"),
    }
    # HS256 keyed with the registered public key (key confusion): built by hand, because PyJWT
    # rightly refuses to do it.
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k384"}).encode())
    body = b64(json.dumps(claims()).encode())
    secret = open(f"{d}/p384-public.pem", "rb").read()
    sig = b64(hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest())
    refused["HS256 with the public key"] = f"{header}.{body}.{sig}"
    # A valid signature over tampered claims.
    good = jwt.encode(claims(), p384, algorithm="ES384").split(".")
    tampered = b64(json.dumps(claims(sub=CLIENT, scope="system/*.cruds", jti="x" + str(uuid.uuid4()))).encode())
    refused["tampered payload"] = f"{good[0]}.{tampered}.{good[2]}"
    for name, assertion in refused.items():
        r = post(assertion)
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert r.json()["error"] == "invalid_client", (name, r.text)

    # The issuer identifier is an accepted audience (current private_key_jwt advice), and so is
    # the endpoint being called: introspection with `aud` set to the introspection endpoint.
    r = post(jwt.encode(claims(aud=base), p384, algorithm="ES384"))
    assert r.status_code == 200, ("issuer as aud", r.status_code, r.text)
    access = r.json()["access_token"]
    intro = requests.post(
        f"{base}/oauth/introspect",
        data={
            "token": access,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": jwt.encode(claims(aud=f"{base}/oauth/introspect"), p384, algorithm="ES384"),
        },
        timeout=30,
    )
    assert intro.status_code == 200 and intro.json()["active"] is True, (intro.status_code, intro.text)
    # Past nbf and iat are fine.
    assert post(jwt.encode(claims(nbf=now - 10, iat=now - 10), p384, algorithm="ES384")).status_code == 200

    # Scopes beyond the registration; two authentication methods at once; wrong assertion type.
    expect(post(jwt.encode(claims(), p384, algorithm="ES384"), scope="system/Observation.cruds"), 400, "invalid_scope")
    expect(post(jwt.encode(claims(), p384, algorithm="ES384"), extra={"client_secret": "x"}), 400, "invalid_request")
    expect(post(jwt.encode(claims(), p384, algorithm="ES384"), extra={"client_assertion_type": "urn:x"}), 400, "invalid_request")
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "keys":
        keys(sys.argv[2])
    else:
        flow(sys.argv[2], sys.argv[3])
