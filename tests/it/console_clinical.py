"""Clinicians in the console (#24), as a browser would use it (requests + pyotp): patient search by
variant kanji, kana, id, identifier and birth date (ISO and 和暦); a patient's record with each
record's versions, 入力者 and hash; the proxy-entry approval queue; break-glass with a reason.
Oracle checks: a patient outside the doctor's care answers exactly as one that does not exist,
and the clerk's console has no clinical pages. Used by tests/it/console.rs.

  console_clinical.py BASE SECRETS_JSON PASSWORD NEW_PASSWORD HASH_HEX PENDING_ID
"""
import json
import re
import sys
import time

import pyotp
import requests

base, secrets, pw, new_pw, final_hash, pending = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]


def csrf(html):
    return re.search(r'name="csrf" value="([0-9a-f]{32})"', html).group(1)


def sign_in(user, lang="ja"):
    s = requests.Session()
    s.headers["User-Agent"] = "mamori-test-browser/1.0"
    s.headers["Accept-Language"] = lang
    r = s.get(base + "/console/")
    assert "/login" in r.url, r.url
    r = s.post(r.url, data={"username": user, "password": pw, "csrf": csrf(r.text)})
    assert "/login/totp" in r.url, (r.url, r.status_code)
    action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
    r = s.post(base + action, data={"code": pyotp.TOTP(secrets[user]).now(), "csrf": csrf(r.text)})
    if "/login/password" in r.url:
        action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
        r = s.post(base + action, data={"current_password": pw, "new_password": new_pw,
                                        "new_password2": new_pw, "csrf": csrf(r.text)})
    assert r.url.endswith("/console/"), r.url
    return s, r.text


def main_of(html):
    """The page's content, without the per-request parts."""
    return re.search(r"<main.*</main>", html, re.S).group(0)


# ---- The doctor caring for p-care.
s, home = sign_in("tanaka")
assert 'href="/console/patients"' in home and 'href="/console/approvals"' in home, home
for q in ["髙橋", "高橋", "たかはし", "タカハシ", "ﾀｶﾊｼ", "p-care", "MRN-1001", "1970-01-02", "昭和45年1月2日", "S45.1.2"]:
    r = s.get(base + "/console/patients", params={"q": q})
    assert r.status_code == 200, (q, r.status_code)
    assert 'href="/console/patients/p-care"' in r.text, (q, main_of(r.text))
    assert "/console/patients/p-other" not in r.text, q
# A patient outside the care relationship is not found by any key.
for q in ["山田", "p-other", "MRN-2002", "1980-05-06"]:
    r = s.get(base + "/console/patients", params={"q": q})
    assert r.status_code == 200 and 'id="no-patients"' in r.text and "/console/patients/p-other" not in r.text, \
        (q, main_of(r.text))
# Too long a query: a clear error on the form, what was typed kept.
r = s.get(base + "/console/patients", params={"q": "あ" * 50})
assert r.status_code == 400 and "検索文字列が長すぎます" in r.text and 'value="' + "あ" * 50 in r.text, r.status_code

r = s.get(base + "/console/patients/p-care")
assert r.status_code == 200, r.status_code
page = main_of(r.text)
assert "髙橋 花子" in page and "昭和45年1月2日" in page and "Observation" in page, page
assert "承認待ち" in page, "the proxy entry shows as awaiting approval"
obs = re.findall(r'href="/console/records/Observation/([^"]+)"', page)
assert len(obs) == 2 and pending in obs, obs
final = [o for o in obs if o != pending][0]
r = s.get(base + f"/console/records/Observation/{final}")
assert r.status_code == 200 and final_hash in r.text, "the version's hash is shown"
assert "client:seed" in r.text and "確定" in r.text, main_of(r.text)
r = s.get(base + f"/console/records/Observation/{pending}")
assert "承認待ち（承認者: Practitioner/tanaka）" in r.text, main_of(r.text)

# The oracle: hidden looks exactly like missing (status and page).
hidden = s.get(base + "/console/patients/p-other")
missing = s.get(base + "/console/patients/p-nobody")
assert hidden.status_code == missing.status_code == 404, (hidden.status_code, missing.status_code)
assert main_of(hidden.text).replace("p-other", "X") == main_of(missing.text).replace("p-nobody", "X"), \
    (main_of(hidden.text), main_of(missing.text))
h2 = s.get(base + "/console/records/Patient/p-other")
m2 = s.get(base + "/console/records/Patient/p-nobody")
assert h2.status_code == m2.status_code == 404
assert main_of(h2.text).replace("p-other", "X") == main_of(m2.text).replace("p-nobody", "X")

# Approvals: the queue, a forged form refused, then approve.
r = s.get(base + "/console/approvals")
assert r.status_code == 200 and f"/console/approvals/Observation/{pending}" in r.text, main_of(r.text)
token = csrf(r.text)
forged = s.post(base + f"/console/approvals/Observation/{pending}", data={"csrf": "0" * 32})
assert forged.status_code == 403, forged.status_code
r = s.post(base + f"/console/approvals/Observation/{pending}", data={"csrf": token})
assert r.status_code == 200 and r.url.endswith("/console/approvals?approved=1") and 'id="no-pending"' in r.text, \
    (r.url, main_of(r.text))
r = s.get(base + f"/console/records/Observation/{pending}")
assert "確定（承認）" in r.text and "確定（確定者: Practitioner/tanaka）" in r.text, main_of(r.text)

# Break-glass: the reason is required (kept form, clear error); then granted, and the record opens.
r = s.get(base + "/console/patients/p-other/break-glass")
assert r.status_code == 200 and 'name="reason"' in r.text
token = csrf(r.text)
r = s.post(base + "/console/patients/p-other/break-glass", data={"csrf": token, "reason": "  ", "minutes": "30"})
assert r.status_code == 400 and 'id="glass-error"' in r.text, (r.status_code, main_of(r.text))
assert "非常時アクセスには理由の入力が必要です" in r.text, main_of(r.text)
r = s.post(base + "/console/patients/p-other/break-glass", data={"csrf": token, "reason": "救急搬送、意識障害", "minutes": "999"})
assert r.status_code == 400 and "救急搬送、意識障害" in r.text, "an unknown duration is refused and the reason kept"
r = s.post(base + "/console/patients/p-other/break-glass", data={"csrf": token, "reason": "救急搬送、意識障害", "minutes": "30"})
assert r.status_code == 200 and r.url.endswith("/console/patients/p-other"), (r.status_code, r.url)
assert 'id="under-glass"' in r.text and "山田 太郎" in r.text, main_of(r.text)
assert "/break-glass" not in main_of(r.text), "no second grant offered while one is active"
# The banner says what is true, not what a link says: the carer's own patient has none.
assert 'id="under-glass"' not in s.get(base + "/console/patients/p-care?granted=x").text
# A break-glass on a patient that does not exist is "not found".
r = s.post(base + "/console/patients/p-nobody/break-glass", data={"csrf": token, "reason": "x", "minutes": "30"})
assert r.status_code == 404, r.status_code

# English.
r = s.get(base + "/console/patients/p-care?lang=en")
assert '<html lang="en">' in r.text and "Entered by" in r.text and "awaiting approval" not in r.text

# ---- Another doctor, outside p-care's care relationship: sees nothing of it.
s2, _ = sign_in("yamada")
hidden = s2.get(base + "/console/patients/p-care")
missing = s2.get(base + "/console/patients/p-nobody")
assert hidden.status_code == missing.status_code == 404
assert main_of(hidden.text).replace("p-care", "X") == main_of(missing.text).replace("p-nobody", "X")
r = s2.get(base + "/console/patients", params={"q": "髙橋"})
assert 'id="no-patients"' in r.text and "/console/patients/p-care" not in r.text
r = s2.get(base + f"/console/records/Observation/{final}")
assert r.status_code == 404, r.status_code
# Not the author: the queue is empty, and approving another's entry is refused.
r = s2.get(base + "/console/approvals")
assert 'id="no-pending"' in r.text

# ---- The clerk: no clinical pages, in the menu or by URL (as a page that does not exist).
s3, home = sign_in("uketsuke")
assert "/console/patients" not in home and "/console/approvals" not in home, home
unknown = s3.get(base + "/console/no-such-page")
for path in ["/console/patients?q=%E9%AB%99%E6%A9%8B", "/console/patients/p-care", f"/console/records/Observation/{final}",
             "/console/approvals", "/console/patients/p-care/break-glass"]:
    r = s3.get(base + path)
    assert r.status_code == 404, (path, r.status_code)
    assert main_of(r.text) == main_of(unknown.text), path
r = s3.post(base + "/console/patients/p-care/break-glass", data={"csrf": csrf(home), "reason": "見たい", "minutes": "30"})
assert r.status_code == 403, r.status_code

# ---- The security manager's access review (Z6): open, decide (keep / revoke), own account refused.
s4, home = sign_in("anzen")
assert 'href="/console/reviews"' in home and "/console/patients" not in home, home
r = s4.get(base + "/console/reviews")
token = csrf(r.text)
r = s4.post(base + "/console/reviews", data={"csrf": token, "reason": " ", "users": "yamada"})
assert r.status_code == 400 and 'id="open-error"' in r.text and 'value="yamada"' in r.text, main_of(r.text)
r = s4.post(base + "/console/reviews", data={"csrf": token, "reason": "定期見直し", "users": "yamada, uketsuke anzen"})
assert r.status_code == 200 and "/console/reviews/" in r.url, (r.status_code, r.url)
campaign = r.url.rsplit("/", 1)[1]
assert "自分自身のアカウントは見直せません" in r.text
r = s4.post(base + f"/console/reviews/{campaign}/anzen", data={"csrf": token})
assert r.status_code == 403, "one's own access is not one's to confirm"
r = s4.post(base + f"/console/reviews/{campaign}/yamada", data={"csrf": token, "note": "担当継続"})
assert r.url.endswith("?decided=1") and "すべて継続" in r.text, main_of(r.text)
r = s4.post(base + f"/console/reviews/{campaign}/uketsuke", data={"csrf": token, "revoke": "clerk", "note": "退職予定"})
assert "取消: clerk" in r.text, main_of(r.text)
r = s4.post(base + f"/console/reviews/{campaign}/uketsuke", data={"csrf": token})
assert r.status_code == 409, "decided once"
r = s4.get(base + "/console/")
assert f'href="/console/reviews/{campaign}"' in r.text, "the dashboard links the open campaign"
print("ok")
