"""An outside client (requests + pyotp) signing in through Mamori's login pages as a browser would.

Usage: login_client.py BASE USER PASSWORD NEW_PASSWORD [TOTP_SECRET]
Without TOTP_SECRET the account has no second factor yet and must enrol on the way in.
"""
import re
import sys
import time

import pyotp
import requests

base, user, pw, new_pw = sys.argv[1:5]
secret = sys.argv[5] if len(sys.argv) > 5 else None
s = requests.Session()
s.headers["User-Agent"] = "mamori-test-browser/1.0"


def csrf(html):
    return re.search(r'name="csrf" value="([0-9a-f]{32})"', html).group(1)


r = s.get(base + "/login?next=/account")
assert r.status_code == 200, r.status_code
assert '<html lang="ja">' in r.text and "ログイン" in r.text
assert 'autocomplete="username"' in r.text and 'autocomplete="current-password"' in r.text
assert s.get(base + "/login?lang=en").text.count("Sign in") >= 2
r = s.get(base + "/login?lang=ja&next=/account")  # the choice sticks (cookie); back to Japanese

# Without the CSRF token: refused.
assert s.post(base + "/login", data={"username": user, "password": pw}).status_code == 403
# A wrong password says only 認証に失敗しました.
r = s.post(base + "/login?next=/account", data={"username": user, "password": "Wrong#pass123", "csrf": csrf(r.text)})
assert r.status_code == 401 and "認証に失敗しました" in r.text, (r.status_code, r.text)
time.sleep(1.2)  # the retry delay after one failure

r = s.post(base + "/login?next=/account", data={"username": user, "password": pw, "csrf": csrf(r.text)})
assert r.status_code == 200, r.status_code
assert 'autocomplete="one-time-code"' in r.text
if secret is None:
    assert "/login/enroll" in r.url, r.url
    secret = re.search(r"secret=([A-Z2-7]+)", r.text).group(1)
else:
    assert "/login/totp" in r.url, r.url
    # Data is not reachable before the second factor.
    assert s.get(base + "/account", allow_redirects=False).status_code == 303
action = re.search(r'action="([^"]+)"', r.text).group(1).replace("&amp;", "&")
r = s.post(base + action, data={"code": pyotp.TOTP(secret).now(), "csrf": csrf(r.text)})
assert "/login/password" in r.url and 'autocomplete="new-password"' in r.text, (r.url, r.text)

form = {"current_password": pw, "new_password": new_pw, "new_password2": new_pw, "csrf": csrf(r.text)}
r = s.post(base + "/login/password?next=/account", data=dict(form, new_password="password123!", new_password2="password123!"))
assert r.status_code == 400 and "辞書にある単語" in r.text, r.text
r = s.post(base + "/login/password?next=/account", data=dict(form, csrf=csrf(r.text)))
assert r.url.endswith("/account") and user in r.text, (r.url, r.text)

r = s.post(base + "/logout", data={"csrf": csrf(r.text)})
assert "/login" in r.url
assert s.get(base + "/account", allow_redirects=False).status_code == 303

# The session belongs to this browser only: its cookie used from another terminal is refused,
# and the session ends for its owner too (the token was stolen; whoever has it, it is dead).
r = s.get(base + "/login?next=/account")
r = s.post(base + "/login?next=/account", data={"username": user, "password": new_pw, "csrf": csrf(r.text)})
assert "/login/totp" in r.url, r.url
# The current step's code is spent (replay protection): the next step's is within the window.
r = s.post(base + "/login/totp?next=/account", data={"code": pyotp.TOTP(secret).at(time.time() + 30), "csrf": csrf(r.text)})
assert r.url.endswith("/account") and user in r.text, (r.url, r.text)
other = requests.get(base + "/account", cookies=s.cookies, headers={"User-Agent": "another-terminal"}, allow_redirects=False)
assert other.status_code == 303, other.status_code
assert s.get(base + "/account", allow_redirects=False).status_code == 303
print("ok")
