"""Outside SMART/OIDC clients, as they are, against the real server:

1. Authlib's OAuth2Session runs the authorization-code flow with PKCE (S256) for a public client;
   a `requests` browser signs in through the login pages (password, TOTP, forced change), picks
   the patient on the Japanese consent page and approves. The ID token is verified with joserfc
   against the published JWKS; the access token reads FHIR; refresh rotates; reuse is refused;
   revocation takes effect at once.
2. fhirclient (SMART on FHIR Python client) does a standalone launch from the CapabilityStatement's
   oauth-uris: the same browser (single sign-on: no second login) approves, fhirclient exchanges
   the code and reads the patient in context.

Usage: smart_client.py BASE USER PASSWORD NEW_PASSWORD TOTP_SECRET PATIENT_NUMBER PATIENT_ID
"""
import re
import sys
import html as htmlmod
from urllib.parse import urlsplit, parse_qs

import pyotp
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.common.security import generate_token
from joserfc import jwt
from joserfc.jwk import KeySet
from fhirclient import client as fhirclient_client

base, user, pw, new_pw, secret, number, pid = sys.argv[1:8]
REDIRECT = "http://127.0.0.1:9/cb"
FHIR = base + "/fhir"

browser = requests.Session()
browser.headers["User-Agent"] = "mamori-smart-browser/1.0"


def csrf(page):
    return re.search(r'name="csrf" value="([0-9a-f]{32})"', page).group(1)


def hidden_fields(page):
    form = page[page.index('<form id="consent"'):]
    return {htmlmod.unescape(k): htmlmod.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)}


def approve(authorize_url, first_login):
    """Drives the browser from the authorization URL to the app's redirect; returns that URL."""
    r = browser.get(authorize_url)
    if first_login:
        assert "/login" in r.url and 'autocomplete="username"' in r.text, r.url
        action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
        r = browser.post(base + action, data={"username": user, "password": pw, "csrf": csrf(r.text)})
        assert "/login/totp" in r.url, r.url
        action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
        r = browser.post(base + action, data={"code": pyotp.TOTP(secret).now(), "csrf": csrf(r.text)})
        assert "/login/password" in r.url, r.url
        action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
        r = browser.post(base + action, data={"current_password": pw, "new_password": new_pw, "new_password2": new_pw, "csrf": csrf(r.text)})
    assert "/oauth/authorize" in r.url and r.status_code == 200, (r.status_code, r.url, r.text[:500])
    assert "アクセスの許可" in r.text and "対象患者の選択" in r.text, r.text
    # The patient picker: find by patient number, pick the one found.
    fields = hidden_fields(r.text)
    r = browser.get(base + "/oauth/authorize", params=dict(fields, patient_query=number))
    assert f'value="{pid}"' in r.text, r.text
    data = dict(hidden_fields(r.text), decision="allow", patient=pid, csrf=csrf(r.text))
    r = browser.post(base + "/oauth/authorize", data=data, allow_redirects=False)
    assert r.status_code == 303, (r.status_code, r.text)
    return r.headers["Location"]


# --- 1. Authlib, discovery first --------------------------------------------------------------
oidc = requests.get(base + "/.well-known/openid-configuration").json()
smart = requests.get(FHIR + "/.well-known/smart-configuration").json()
assert oidc["issuer"] == base and smart["authorization_endpoint"] == oidc["authorization_endpoint"]
for cap in ["launch-standalone", "client-public", "client-confidential-asymmetric", "context-standalone-patient",
            "permission-v2", "permission-v1", "sso-openid-connect"]:
    assert cap in smart["capabilities"], cap
assert smart["code_challenge_methods_supported"] == ["S256"]

scope = "openid fhirUser launch/patient offline_access patient/Patient.rs patient/Observation.rs"
app = OAuth2Session("viewer", scope=scope, redirect_uri=REDIRECT, code_challenge_method="S256",
                    token_endpoint_auth_method="none")
verifier = generate_token(64)
nonce = generate_token(20)
url, state = app.create_authorization_url(oidc["authorization_endpoint"], code_verifier=verifier, nonce=nonce, aud=FHIR)
callback = approve(url, first_login=True)
assert callback.startswith(REDIRECT), callback
assert parse_qs(urlsplit(callback).query)["iss"] == [base]
token = app.fetch_token(oidc["token_endpoint"], authorization_response=callback, code_verifier=verifier)
assert token["patient"] == pid and token["token_type"].lower() == "bearer", token
assert "refresh_token" in token and "id_token" in token, token

keys = KeySet.import_key_set(requests.get(oidc["jwks_uri"]).json())
id_token = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
jwt.JWTClaimsRegistry(
    iss={"essential": True, "value": base},
    aud={"essential": True, "value": "viewer"},
    sub={"essential": True, "value": user},
    nonce={"essential": True, "value": nonce},
).validate(id_token.claims)
assert id_token.claims["fhirUser"] == f"{base}/fhir/Practitioner/{user}", id_token.claims

r = app.get(f"{FHIR}/Patient/{pid}")
assert r.status_code == 200 and r.json()["id"] == pid, (r.status_code, r.text)
# patient/ scopes reach only the patient in context.
assert app.get(f"{FHIR}/Patient/other-patient").status_code == 404

# Refresh: rotated; the spent refresh token is refused and takes the family down.
first_refresh = token["refresh_token"]
new = app.refresh_token(oidc["token_endpoint"], refresh_token=first_refresh)
assert new["refresh_token"] != first_refresh and app.get(f"{FHIR}/Patient/{pid}").status_code == 200
reuse = requests.post(oidc["token_endpoint"], data={"grant_type": "refresh_token", "client_id": "viewer", "refresh_token": first_refresh})
assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant", reuse.text
assert app.get(f"{FHIR}/Patient/{pid}").status_code == 401, "reuse revoked the family"

# A fresh authorization (single sign-on: the browser's two-factor session is reused), then revoked.
verifier = generate_token(64)
url, state = app.create_authorization_url(oidc["authorization_endpoint"], code_verifier=verifier, nonce=nonce, aud=FHIR)
token = app.fetch_token(oidc["token_endpoint"], authorization_response=approve(url, first_login=False), code_verifier=verifier)
assert app.get(f"{FHIR}/Patient/{pid}").status_code == 200
r = app.revoke_token(oidc["revocation_endpoint"], token=token["access_token"], token_type_hint="access_token")
assert r.status_code == 200, r.text
assert app.get(f"{FHIR}/Patient/{pid}").status_code == 401, "revoked at once"

# PKCE is not optional: a request without it comes back as an error to the app.
r = browser.get(oidc["authorization_endpoint"], params={"response_type": "code", "client_id": "viewer", "redirect_uri": REDIRECT,
                                                         "scope": scope, "state": "s", "aud": FHIR}, allow_redirects=False)
assert r.status_code == 303 and "error=invalid_request" in r.headers["Location"], r.headers

# --- 2. fhirclient standalone launch ----------------------------------------------------------
settings = {"app_id": "viewer", "api_base": FHIR, "redirect_uri": REDIRECT, "scope": "openid fhirUser patient/*.read"}
smart_app = fhirclient_client.FHIRClient(settings=settings)
assert not smart_app.ready
authorize_url = smart_app.authorize_url
assert "code_challenge_method=S256" in authorize_url and "launch%2Fpatient" in authorize_url, authorize_url
smart_app.handle_callback(approve(authorize_url, first_login=False))
assert smart_app.ready and smart_app.patient_id == pid
patient = smart_app.patient
assert patient is not None and patient.id == pid
assert any(n.family == "山田" for n in patient.name), [n.as_json() for n in patient.name]
print("ok")
