"""Administrators in the console (#24), as a browser would use it (requests + pyotp).

The system administrator registers applications (the secret shown once, then used at the token
endpoint unchanged), rotates a secret (the old one stops at once), disables and enables, refuses a
bad redirect URI with the form kept, rotates the ID-token signing key (the JWKS publishes it).
The security manager checks a proposed policy against the table of expected decisions (a breaking
proposal is shown failing with its diff, and cannot be applied), applies a passing one, edits the
class rules, and verifies the audit trail from the home page. A clerk sees none of it. Used by
tests/it/console.rs.

  console_admin.py BASE SECRETS_JSON PASSWORD NEW_PASSWORD main
  console_admin.py BASE SECRETS_JSON PASSWORD NEW_PASSWORD tampered
  console_admin.py BASE SECRETS_JSON PASSWORD NEW_PASSWORD backups GENERATIONS_JSON
"""
import html
import json
import re
import sys
import time

import pyotp
import requests

base, secrets, pw, new_pw, phase = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def csrf(html):
    return re.search(r'name="csrf" value="([0-9a-f]{32})"', html).group(1)


def sign_in(user, password, lang="ja", ahead=0):
    s = requests.Session()
    s.headers["User-Agent"] = "mamori-test-browser/1.0"
    s.headers["Accept-Language"] = lang
    r = s.get(base + "/console/")
    assert "/login" in r.url, r.url
    r = s.post(r.url, data={"username": user, "password": password, "csrf": csrf(r.text)})
    assert "/login/totp" in r.url, (r.url, r.status_code)
    action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
    r = s.post(base + action, data={"code": pyotp.TOTP(secrets[user]).at(time.time() + ahead), "csrf": csrf(r.text)})
    if "/login/password" in r.url:
        action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
        r = s.post(base + action, data={"current_password": password, "new_password": new_pw,
                                        "new_password2": new_pw, "csrf": csrf(r.text)})
    assert r.url.endswith("/console/"), r.url
    return s, r.text


def main_of(html):
    return re.search(r"<main.*</main>", html, re.S).group(0)


def unescape(s):
    return html.unescape(s)


def token(client_id, secret, scope="system/Observation.rs"):
    return requests.post(base + "/oauth/token", auth=(client_id, secret),
                         data={"grant_type": "client_credentials", "scope": scope}, timeout=30)


def post(s, path, page_html, data):
    d = dict(data)
    d["csrf"] = csrf(page_html)
    return s.post(base + path, data=d)


def approve(session, request_url):
    """A second person approves a held change on its page, confirming the hash shown there."""
    page = session.get(request_url)
    assert page.status_code == 200 and 'id="approve"' in page.text, (page.status_code, main_of(page.text))
    sha = re.search(r'name="sha256" value="([0-9a-f]{64})"', page.text).group(1)
    assert f'<code id="sha256">{sha}</code>' in page.text, "the hash approved is the one shown"
    r = post(session, request_url.split("?")[0][len(base):], page.text, {"step": "approve", "sha256": sha, "note": ""})
    assert r.status_code == 200 and "done=approved" in r.url, (r.status_code, r.url, main_of(r.text))
    return r


if phase == "backups":
    # Backups (#27). Generations: the oldest's manifest was altered; a drill ran; the vault is
    # configured at an address nobody answers.
    names = json.loads(sys.argv[6])
    c, home = sign_in("uketsuke", pw)
    assert "/console/backups" not in home, "the clerk has no backups entry"
    r = c.get(base + "/console/backups")
    assert r.status_code == 403, r.status_code
    assert 'id="read-only-banner"' not in home

    a, home = sign_in("anzen", pw)
    assert 'href="/console/backups"' in home, "the security manager has the entry"
    r = a.get(base + "/console/backups")
    assert r.status_code == 200, r.status_code
    page = main_of(r.text)
    rows = re.findall(r"<tr><td><code>([0-9TZ-]+)</code></td>(.*?)</tr>", page, re.S)
    assert [n for n, _ in rows] == list(reversed(names)), (rows, names)
    for n, row in rows:
        if n == names[0]:
            assert "署名" in row and 'class="bad"' in row and "検証済み" not in row, row
        else:
            assert "検証済み" in row, row
    assert 'id="drill-result"' in page and "復元を確認" in page and 'id="rto"' in page and 'id="rpo"' in page, page
    assert 'id="drill-overdue"' not in page, page
    assert 'id="vault-state"' in page and "接続できません" in page, "an unreachable vault is shown, not hidden"
    assert 'id="mode" ' not in page or "通常運用" in page, page
    assert "通常運用" in page and 'action="/console/backups/emergency"' not in page, \
        "the security manager sees the mode but has no switch"
    r = post(a, "/console/backups/emergency", r.text, {"mode": "on", "reason": "試しに"})
    assert r.status_code == 403, (r.status_code, main_of(r.text))

    k, home = sign_in("kanri", pw)
    r = k.get(base + "/console/backups")
    assert r.status_code == 200 and 'action="/console/backups/emergency"' in r.text, main_of(r.text)
    # A reason is required; a forged form changes nothing.
    r = post(k, "/console/backups/emergency", r.text, {"mode": "on", "reason": "  "})
    assert r.status_code == 400 and 'id="switch-error"' in r.text and "理由" in r.text, (r.status_code, main_of(r.text))
    forged = k.post(base + "/console/backups/emergency", data={"mode": "on", "reason": "x"})
    assert forged.status_code == 403, forged.status_code
    assert "通常運用" in k.get(base + "/console/backups").text
    r = post(k, "/console/backups/emergency", r.text, {"mode": "on", "reason": "ランサムウェアの疑い"})
    assert r.status_code == 200 and r.url.endswith("?switched=on"), (r.status_code, r.url, main_of(r.text))
    assert 'id="switched"' in r.text and "参照専用モード中" in r.text and "ランサムウェアの疑い" in r.text, main_of(r.text)
    # Switching on again is a conflict, said on the form.
    r2 = post(k, "/console/backups/emergency", r.text, {"mode": "on", "reason": "again"})
    # (the form now offers "off"; a hand-made "on" is refused as already on)
    assert r2.status_code == 409 and 'id="switch-error"' in r2.text, (r2.status_code, main_of(r2.text))
    # Every visitor sees it, on every page: the clerk's home, the security manager's audit page.
    for sess, path in [(c, "/console/"), (a, "/console/audit"), (k, "/console/")]:
        page = sess.get(base + path).text
        assert 'id="read-only-banner"' in page and "参照専用モード中です" in page, (path, main_of(page))
    assert 'href="/console/backups"' not in re.search(r'<p role="alert" class="banner".*?</p>',
                                                       c.get(base + "/console/").text, re.S).group(0), \
        "the clerk's banner does not link to a page they cannot open"
    # In English, and back to normal operation.
    r = k.get(base + "/console/backups?lang=en")
    assert "Emergency read-only mode is on" in r.text and "Return to normal operation" in r.text, main_of(r.text)
    r = post(k, "/console/backups/emergency", r.text, {"mode": "off", "reason": "restored and checked"})
    assert r.status_code == 200 and r.url.endswith("?switched=off"), (r.status_code, r.url)
    assert "record writes are accepted again" in r.text and "Normal operation" in r.text, main_of(r.text)
    assert 'id="read-only-banner"' not in c.get(base + "/console/").text
    r = k.get(base + "/console/backups?lang=en")
    assert "Generations" in r.text and "unreachable" in r.text and "restore proven" in r.text, main_of(r.text)
    print("ok")
    sys.exit(0)

if phase == "tampered":
    # Someone with database access edited an entry: the security manager's "verify now" says so,
    # on the home page and as an alert.
    # The next window's code (the server accepts one step of drift): the main phase may have used
    # this window's code for anzen, and a code is accepted once.
    s, home = sign_in("anzen", new_pw, ahead=30)
    r = post(s, "/console/audit/verify", home, {})
    assert r.status_code == 200 and r.url.endswith("/console/#h-trail"), (r.status_code, r.url)
    page = main_of(r.text)
    assert 'id="verify-result" class="bad"' in page, page
    assert "改ざんまたは欠落" in page and "altered" in page, page
    assert "alert-audit-verify" in page, "the failed check is among the alerts"
    # The application's row changed with SQL too: the home page says so; the integrity page shows
    # it changed around the path and blocked, and reverting it (with a reason) ends both.
    for _ in range(150):  # found and blocked within the re-hash interval
        r = s.get(base + "/console/integrity")
        if "client/lab-feed" in r.text and 'id="blocks"' in r.text:
            break
        time.sleep(0.2)
    assert "client/lab-feed" in r.text and 'id="blocks"' in r.text, main_of(r.text)
    home = s.get(base + "/console/").text
    assert 'id="integrity-alert"' in home, main_of(home)
    r = s.get(base + "/console/integrity")
    r = post(s, "/console/integrity", r.text, {"step": "revert", "item": "client/lab-feed", "reason": "不正な変更"})
    assert r.status_code == 200 and r.url.endswith("?done=revert"), (r.status_code, r.url, main_of(r.text))
    for _ in range(100):
        r = s.get(base + "/console/integrity")
        if 'id="no-tampered"' in r.text and 'id="no-blocks"' in r.text:
            break
        time.sleep(0.2)
    assert 'id="no-tampered"' in r.text and 'id="no-blocks"' in r.text, main_of(r.text)
    print("ok")
    sys.exit(0)

# ---- The system administrator.
s, home = sign_in("kanri", pw)
for href in ["/console/apps", "/console/keys", "/console/users"]:
    assert f'href="{href}"' in home, (href, home)
for href in ["/console/policies", "/console/class-rules", "/console/audit", "/console/patients"]:
    assert f'href="{href}"' not in home, href

r = s.get(base + "/console/apps")
assert r.status_code == 200 and 'id="no-apps"' in r.text, r.status_code
apps = r.text

# Mistakes: a clear error in Japanese, what was typed kept, nothing registered.
r = post(s, "/console/apps", apps, {"client_id": "bad id!", "name": "壊れた名前", "scope": "system/Observation.rs",
                                      "minutes": "15"})
assert r.status_code == 400 and 'id="register-error"' in r.text, r.status_code
err = re.search(r'id="register-error">([^<]*)<', r.text).group(1)
assert not err.isascii(), err
assert 'value="bad id!"' in r.text and 'value="壊れた名前"' in r.text, "the form keeps what was typed"
r = post(s, "/console/apps", apps, {"client_id": "bedside", "scope": "launch openid fhirUser user/Patient.rs",
                                      "minutes": "15", "redirect_uris": "http://app.example.jp/cb"})
assert r.status_code == 400 and "http://app.example.jp/cb" in r.text, r.status_code
r = post(s, "/console/apps", apps, {"client_id": "lab-feed", "scope": "system/Observation.rs", "minutes": "0"})
assert r.status_code == 400 and "1〜1440" in r.text, r.status_code
r = post(s, "/console/apps", apps, {"client_id": "lab-feed", "scope": "system/Observation.rs", "minutes": "15",
                                      "jwks": "{not json"})
assert r.status_code == 400 and "JSON" in r.text, r.status_code
assert 'id="no-apps"' in s.get(base + "/console/apps").text, "nothing was registered"

# A confidential client with system/ scopes: a high-risk change (the two-person rule). The secret
# is on the registration's response only; it works once a second person has approved.
r = post(s, "/console/apps", apps, {"client_id": "lab-feed", "name": "検査システム連携",
                                      "scope": "system/Observation.rs", "minutes": "15", "class": "general"})
assert r.status_code == 202 and 'id="held"' in r.text, (r.status_code, main_of(r.text))
rid = re.search(r'href="/console/changes/(\d+)"', main_of(r.text)).group(1)
secret = unescape(re.search(r'<pre id="secret">([^<]+)</pre>', r.text).group(1))
assert len(secret) >= 32, secret
t = token("lab-feed", secret)
assert t.status_code == 401 and t.json()["error"] == "invalid_client", "not registered before approval: " + t.text
# The requester cannot approve their own request: said on the request's page.
page = s.get(base + f"/console/changes/{rid}")
assert 'id="approve"' not in page.text and 'value="withdraw"' in page.text, main_of(page.text)
sha = re.search(r'name="sha256" value="([0-9a-f]{64})"', page.text).group(1)
r = post(s, f"/console/changes/{rid}", page.text, {"step": "approve", "sha256": sha, "note": ""})
assert r.status_code == 403 and "自分の依頼は承認できません" in r.text, (r.status_code, main_of(r.text))
# The security manager sees it waiting on the home page and approves it.
a, ahome = sign_in("anzen", pw)
assert 'id="changes-waiting"' in ahome and 'href="/console/changes"' in ahome, main_of(ahome)
inbox = a.get(base + "/console/changes").text
assert f'href="/console/changes/{rid}"' in inbox and "lab-feed" in inbox, main_of(inbox)
approve(a, base + f"/console/changes/{rid}")
t = token("lab-feed", secret)
assert t.status_code == 200 and t.json()["access_token"], t.text
r = s.get(base + "/console/apps/lab-feed")
assert r.status_code == 200 and secret not in r.text and 'id="secret"' not in r.text, "shown once"
assert "client registered" in r.text and "kanri" in r.text, "the history names who requested it"
assert "一般診療" in r.text or "general" in r.text
# Registering the same id again: refused, on the form.
r = post(s, "/console/apps", apps, {"client_id": "lab-feed", "scope": "system/Observation.rs", "minutes": "15"})
assert r.status_code == 409 and 'id="register-error"' in r.text, r.status_code

# A forged form (no CSRF token) changes nothing.
r = s.post(base + "/console/apps/lab-feed/disable", data={})
assert r.status_code == 403, r.status_code
assert token("lab-feed", secret).status_code == 200, "still enabled"

# A new secret: shown once; the old one stops at once.
detail = s.get(base + "/console/apps/lab-feed").text
r = post(s, "/console/apps/lab-feed/rotate-secret", detail, {})
assert r.status_code == 200, r.status_code
new_secret = unescape(re.search(r'<pre id="secret">([^<]+)</pre>', r.text).group(1))
assert new_secret != secret
old = token("lab-feed", secret)
assert old.status_code == 401 and old.json()["error"] == "invalid_client", old.text
assert token("lab-feed", new_secret).status_code == 200

# Disabled: no tokens; enabled again: tokens.
r = post(s, "/console/apps/lab-feed/disable", detail, {})
assert r.status_code == 200 and r.url.endswith("/console/apps/lab-feed?done=disable"), r.url
assert 'id="enable"' in r.text
refused = token("lab-feed", new_secret)
assert refused.status_code in (400, 401) and refused.json()["error"] in ("invalid_client", "unauthorized_client"), \
    refused.text
# Enabling an application with system/ scopes again is held too: to its request, then approved.
r = post(s, "/console/apps/lab-feed/enable", r.text, {})
assert r.status_code == 200 and "?requested=1" in r.url and 'id="requested"' in r.text, r.url
assert token("lab-feed", new_secret).status_code in (400, 401), "still disabled while held"
approve(a, r.url)
assert token("lab-feed", new_secret).status_code == 200
r = s.get(base + "/console/apps/lab-feed")
r = post(s, "/console/apps/lab-feed/enable", r.text, {})
assert r.status_code == 409 and 'id="app-error"' in r.text, "enabling an enabled client: said on the page"

# A public app (PKCE): no secret, no secret to rotate.
r = post(s, "/console/apps", apps, {"client_id": "bedside", "scope": "launch openid fhirUser user/Patient.rs",
                                      "minutes": "15", "redirect_uris": "https://app.example.jp/cb"})
assert r.status_code == 400 and "SMART のリソーススコープではありません" in r.text, "an unknown scope, in Japanese"
r = post(s, "/console/apps", apps, {"client_id": "bedside", "scope": "launch/patient openid fhirUser patient/Patient.rs",
                                      "minutes": "15", "redirect_uris": "https://app.example.jp/cb"})
assert r.status_code == 200 and 'id="secret"' not in r.text and "PKCE" in r.text, main_of(r.text)
assert 'id="rotate-secret"' not in r.text
r = s.get(base + "/console/apps/nothing-here")
assert r.status_code == 404, r.status_code
r = s.get(base + "/console/apps")
assert 'href="/console/apps/lab-feed"' in r.text and 'href="/console/apps/bedside"' in r.text

# ---- Signing keys.
r = s.get(base + "/console/keys")
assert r.status_code == 200, r.status_code
before = set(re.findall(r"<tr><td><code>([^<]+)</code>", r.text))
r = post(s, "/console/keys", r.text, {"reason": ""})
assert r.status_code == 400 and 'id="rotate-error"' in r.text, r.status_code
r = post(s, "/console/keys", r.text, {"reason": "年次の鍵更新"})
assert r.status_code == 200 and "?rotated=" in r.url, (r.status_code, r.url)
kid = re.search(r'id="rotated">[^<]*<code>([^<]+)</code>', r.text).group(1)
assert kid not in before
row = re.search(r"<tr><td><code>" + re.escape(kid) + r"</code>.*?</tr>", r.text, re.S).group(0)
assert "署名中" in row and "公開中" in row, row
jwks = requests.get(base + "/oauth/jwks", timeout=30).json()
kids = {k["kid"] for k in jwks["keys"]}
assert kid in kids and before <= kids, (kid, before, kids)

# English on request, the same page.
r = s.get(base + "/console/apps/lab-feed?lang=en")
assert 'lang="en"' in r.text and "Rotate the secret" in r.text and "History" in r.text
s.get(base + "/console/?lang=ja")

# ---- The clerk: none of these pages.
c, chome = sign_in("uketsuke", pw)
for href in ["/console/apps", "/console/keys", "/console/policies", "/console/class-rules"]:
    assert f'href="{href}"' not in chome, href
    r = c.get(base + href)
    assert r.status_code == 403, (href, r.status_code)
    assert "lab-feed" not in r.text and "permit" not in r.text, href

# ---- The security manager: policies (the session opened to approve above).
k = s
s, home = a, a.get(base + "/console/").text
for href in ["/console/policies", "/console/class-rules", "/console/audit"]:
    assert f'href="{href}"' in home, href
assert 'href="/console/apps"' not in home
assert 'id="verify-result" class="notice"' in home, "not verified yet"
r = s.get(base + "/console/policies")
assert r.status_code == 200 and "出荷時の方針" in r.text, r.status_code
policies = unescape(re.search(r'<textarea id="policies"[^>]*>(.*?)</textarea>', r.text, re.S).group(1))
tests = unescape(re.search(r'<textarea id="tests"[^>]*>(.*?)</textarea>', r.text, re.S).group(1))
assert "permit" in policies and "nurse never sees HIV results" in tests, "the shipped table to start from"

# A proposal that lets clerks read everything: the table catches it, the diff shows it.
breaking = policies + '\n@id("clerk-everything")\npermit (principal in Mamori::Role::"clerk", action, resource);\n'
r = post(s, "/console/policies", r.text, {"policies": breaking, "tests": tests, "reason": "", "step": "check"})
assert r.status_code == 200 and 'id="table-failed"' in r.text, main_of(r.text)
assert "clerk never reads clinical records" in r.text
diff = re.search(r'<pre class="diff" id="diff">(.*?)</pre>', r.text, re.S).group(1)
assert '<span class="ins">+ @id(&quot;clerk-everything&quot;)</span>' in diff or \
    '<span class="ins">+ @id(&#34;clerk-everything&#34;)</span>' in diff, diff
assert 'class="del"' not in diff, "nothing removed"
# Applying it is refused, with the failures; nothing changes.
r = post(s, "/console/policies", r.text, {"policies": breaking, "tests": tests, "reason": "試験", "step": "apply"})
assert r.status_code == 400 and 'id="policy-error"' in r.text and 'id="table-failed"' in r.text, r.status_code
assert "clerk-everything" in r.text, "the form keeps what was typed"
assert "出荷時の方針" in s.get(base + "/console/policies").text, "not applied"
# No table: refused. No reason: refused.
r = post(s, "/console/policies", r.text, {"policies": policies, "tests": "  ", "reason": "x", "step": "apply"})
assert r.status_code == 400 and 'id="policy-error"' in r.text
r = post(s, "/console/policies", r.text, {"policies": policies, "tests": tests, "reason": "", "step": "apply"})
assert r.status_code == 400 and 'id="policy-error"' in r.text
# Not Cedar: the parser's error, on the form.
r = post(s, "/console/policies", r.text, {"policies": "permit (", "tests": tests, "reason": "", "step": "check"})
assert r.status_code == 400 and 'id="policy-error"' in r.text, r.status_code

# A passing proposal: vendors are refused deletes explicitly; the table gains a case for it.
passing = policies + ('\n@id("vendor-no-delete")\nforbid (principal in Mamori::Role::"maintenance_vendor", '
                      'action == Mamori::Action::"delete", resource);\n')
tests2 = tests + ('\n[[case]]\nname = "vendor never deletes"\nroles = ["maintenance_vendor"]\naction = "delete"\n'
                  'type = "Observation"\nclasses = ["general"]\ncare = true\nexpect = "deny"\n')
r = post(s, "/console/policies", r.text, {"policies": passing, "tests": tests2, "reason": "", "step": "check"})
assert r.status_code == 200 and 'id="table-passed"' in r.text, main_of(r.text)
r = post(s, "/console/policies", r.text, {"policies": passing, "tests": tests2, "reason": "保守事業者の削除を明示的に禁止",
                                          "step": "apply"})
# Held for a second person: the request's page shows the difference; nothing in force yet.
assert r.status_code == 200 and "?requested=1" in r.url, (r.status_code, r.url)
assert "vendor-no-delete" in r.text and 'class="ins"' in r.text, main_of(r.text)
assert "出荷時の方針" in s.get(base + "/console/policies").text, "not applied before approval"
approve(k, r.url)
r = s.get(base + "/console/policies")
assert "保守事業者の削除を明示的に禁止" in r.text and "kanri" in r.text, main_of(r.text)
assert "vendor never deletes" in r.text, "the table applied with them is kept for the next edit"
assert "vendor-no-delete" in r.text

# ---- Class rules.
r = s.get(base + "/console/class-rules")
assert r.status_code == 200 and "出荷時の規則" in r.text, r.status_code
rules = json.loads(unescape(re.search(r'<textarea id="rules"[^>]*>(.*?)</textarea>', r.text, re.S).group(1)))
r = post(s, "/console/class-rules", r.text, {"rules": "{", "reason": "", "step": "check"})
assert r.status_code == 400 and 'id="rules-error"' in r.text, r.status_code
rules2 = dict(rules)
rules2["by_type"] = dict(rules["by_type"])
rules2["by_type"]["Basic"] = ["administrative"]
r = post(s, "/console/class-rules", r.text, {"rules": json.dumps(rules2, ensure_ascii=False, indent=2), "reason": "",
                                             "step": "check"})
assert r.status_code == 200 and 'class="ins"' in r.text and "Basic" in r.text, main_of(r.text)
assert "出荷時の規則" in r.text, "a check changes nothing"
r = post(s, "/console/class-rules", r.text, {"rules": json.dumps(rules2), "reason": "Basic を事務区分に",
                                             "step": "apply"})
assert r.status_code == 200 and "?requested=1" in r.url, (r.status_code, r.url)
approve(k, r.url)
r = s.get(base + "/console/class-rules")
assert "Basic を事務区分に" in r.text and '"Basic"' in unescape(r.text)
# Decided requests stay listed (history does not vanish).
r = s.get(base + "/console/changes?all=1")
assert r.text.count('href="/console/changes/') >= 4 and "承認・反映済み" in r.text, main_of(r.text)

# ---- Configuration integrity: nothing changed around the path, nothing blocked, no baseline yet;
# approving one is held for a second person, then shown.
r = s.get(base + "/console/integrity")
assert r.status_code == 200 and 'id="no-blocks"' in r.text and 'id="no-tampered"' in r.text, main_of(r.text)
assert 'id="no-baseline"' in r.text and 'id="no-external"' in r.text, main_of(r.text)
r = post(s, "/console/integrity", r.text, {"step": "approve", "reason": " "})
assert r.status_code == 400 and 'id="error"' in r.text, (r.status_code, main_of(r.text))
r = post(s, "/console/integrity", r.text, {"step": "approve", "reason": "稼働開始時の構成"})
assert r.status_code == 200 and "?requested=1" in r.url, (r.status_code, r.url)
assert 'id="no-baseline"' in s.get(base + "/console/integrity").text, "not approved by one person"
approve(k, r.url)
r = s.get(base + "/console/integrity")
assert 'id="baseline"' in r.text and "稼働開始時の構成" in r.text and 'id="no-drift"' in r.text, main_of(r.text)

# ---- The audit trail verifies, from the home page.
home = s.get(base + "/console/").text
r = post(s, "/console/audit/verify", home, {})
assert r.status_code == 200 and r.url.endswith("/console/#h-trail"), (r.status_code, r.url)
page = main_of(r.text)
assert 'id="verify-result" class="ok"' in page and "検証: 合格" in page, page
m = re.search(r"記録 (\d+) · チェックポイント (\d+)", page)
assert m and int(m.group(1)) > 20, page
# A forged verify request: refused.
r = s.post(base + "/console/audit/verify", data={})
assert r.status_code == 403
print("ok")
