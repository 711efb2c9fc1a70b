#!/usr/bin/env python3
"""Signs in to the console through the two-factor pages, as a browser would (standard library
only: the TOTP code is computed here, RFC 6238), and prints the Cookie header of the session.
For scripts/bench-console.sh.

Usage: console-session.py BASE USER PASSWORD NEW_PASSWORD TOTP_SECRET USER_AGENT
"""
import base64
import hashlib
import hmac
import http.cookiejar
import re
import struct
import sys
import time
import urllib.parse
import urllib.request

base, user, pw, new_pw, secret, agent = sys.argv[1:7]
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def totp(secret):
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    o = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def go(path, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(base + path, data=data, headers={"User-Agent": agent})
    with opener.open(req) as r:
        return urllib.parse.urlsplit(r.url), r.read().decode()


def csrf(html):
    return re.search(r'name="csrf" value="([0-9a-f]{32})"', html).group(1)


def action(html):
    return re.search(r'<form[^>]*action="([^"]+)"', html).group(1).replace("&amp;", "&")


url, html = go("/login?next=/console/")
url, html = go("/login?next=/console/", {"username": user, "password": pw, "csrf": csrf(html)})
url, html = go(action(html), {"code": totp(secret), "csrf": csrf(html)})
if url.path == "/login/password":
    url, html = go(action(html), {"current_password": pw, "new_password": new_pw, "new_password2": new_pw,
                                  "csrf": csrf(html)})
assert url.path == "/console/", url
print("; ".join(f"{c.name}={c.value}" for c in jar))
