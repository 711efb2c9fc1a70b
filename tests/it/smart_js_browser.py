"""The official SMART JavaScript client (npm `fhirclient`, its browser build as published) in a real
browser (Debian Chromium, headless, driven by Selenium), served from an origin of its own: a
standalone launch with PKCE through Mamori's login pages (password, TOTP, forced change) and
consent page (the patient picker), then the app reads the patient, pages through Observations and
refreshes its token — every call from the app's origin to the server's crosses CORS.

Usage: smart_js_browser.py BASE APP_DIR APP_PORT USER PASSWORD NEW_PASSWORD TOTP_SECRET PATIENT_NUMBER PATIENT_ID OBSERVATIONS
"""
import functools
import json
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pyotp
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, app_dir, app_port, user, pw, new_pw, secret, number, pid, observations = sys.argv[1:11]
app = f"http://127.0.0.1:{app_port}"


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# The app's own origin: a static file server, as an app vendor would host it.
httpd = ThreadingHTTPServer(("127.0.0.1", int(app_port)), functools.partial(Quiet, directory=app_dir))
threading.Thread(target=httpd.serve_forever, daemon=True).start()


def at(origin, path):
    def check(d):
        u = urlsplit(d.current_url)
        return f"{u.scheme}://{u.netloc}" == origin and u.path == path
    return check


def fill(d, element_id, text):
    e = d.find_element(By.ID, element_id)
    e.clear()
    e.send_keys(text)


o = Options()
o.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=ja"]:
    o.add_argument(a)
# A browser set to Japanese, as on the wards: the pages follow Accept-Language.
o.add_experimental_option("prefs", {"intl.accept_languages": "ja"})
o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
wait = WebDriverWait(d, 30)
try:
    # The app starts the launch: discovery (CORS), then the browser goes to the authorization page.
    d.get(app + "/launch.html")
    wait.until(at(base, "/login"))
    fill(d, "username", user)
    fill(d, "password", pw)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(at(base, "/login/totp"))
    fill(d, "code", pyotp.TOTP(secret).now())
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(at(base, "/login/password"))
    fill(d, "current", pw)
    fill(d, "new", new_pw)
    fill(d, "new2", new_pw)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    # Back at the authorization request: the consent page in Japanese, with the patient picker.
    wait.until(at(base, "/oauth/authorize"))
    assert "アクセスの許可" in d.page_source and "対象患者の選択" in d.page_source, d.page_source
    fill(d, "patient_query", number)
    d.find_element(By.ID, "patient_query").submit()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'input[name=patient][value="{pid}"]'))
    d.find_element(By.CSS_SELECTOR, f'input[name=patient][value="{pid}"]').click()
    d.find_element(By.CSS_SELECTOR, 'button[name=decision][value=allow]').click()
    # The app's redirect page exchanges the code and does its work; it writes what it saw.
    wait.until(at(app, "/app.html"))
    wait.until(lambda d: d.find_element(By.ID, "result").text.strip())
    result = json.loads(d.find_element(By.ID, "result").text)
    if "error" in result:
        logs = [e["message"] for e in d.get_log("browser")]
        raise AssertionError(f"the app failed: {result['error']}\n" + "\n".join(logs))
    assert result["patientId"] == pid, result
    assert "山田" in result["family"], result
    assert result["observations"] == int(observations), result
    assert result["pages"] >= 3, result
    assert result["scope"].split() and "patient/Observation.rs" in result["scope"].split(), result
    assert result["refreshed"] and result["afterRefresh"] == pid, result
    assert result["newAccessToken"] and result["newRefreshToken"], result
    # The app's origin never held the session cookie: it is the server's, HttpOnly.
    assert not any(c["name"].endswith("mamori_session") for c in d.get_cookies()), d.get_cookies()
    print(json.dumps(result, ensure_ascii=False), file=sys.stderr)
    print("ok")
finally:
    d.quit()
    httpd.shutdown()
