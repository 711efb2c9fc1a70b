"""A real browser (Debian Chromium, headless, driven by Selenium) with Chromium's virtual WebAuthn
authenticator: a new account enrols a passkey as its second factor through the login pages,
signs out, and signs in again with password + passkey. A browser without the authenticator then
cannot pass the second step.

Usage: passkey_browser.py BASE USER PASSWORD NEW_PASSWORD
"""
import sys
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, user, pw, new_pw = sys.argv[1:5]


def at(path):
    """Waits for the page at exactly this path (a `next=` query naming it does not count)."""
    return lambda d: urlsplit(d.current_url).path == path


def browser(with_authenticator):
    o = Options()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=ja"]:
        o.add_argument(a)
    # A browser set to Japanese, as on the wards: the pages follow Accept-Language.
    o.add_experimental_option("prefs", {"intl.accept_languages": "ja"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    if with_authenticator:
        va = VirtualAuthenticatorOptions()
        va.protocol = VirtualAuthenticatorOptions.Protocol.CTAP2
        va.transport = VirtualAuthenticatorOptions.Transport.INTERNAL
        va.has_resident_key = True
        va.has_user_verification = True
        va.is_user_verified = True
        va.is_user_consenting = True
        d.add_virtual_authenticator(va)
    return d


def password_step(d, password):
    d.get(base + "/login?next=/account")
    d.find_element(By.ID, "username").send_keys(user)
    d.find_element(By.ID, "password").send_keys(password)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


d = browser(True)
wait = WebDriverWait(d, 20)
try:
    # First sign-in: no second factor yet, so enrolment; choose a passkey.
    password_step(d, pw)
    wait.until(at("/login/enroll"))
    assert "パスキーを登録" in d.page_source
    d.find_element(By.ID, "passkey-name").send_keys("診察室PC")
    d.find_element(By.ID, "passkey-register").click()
    wait.until(at("/login/password"))
    assert len(d.get_credentials()) == 1, "the authenticator holds one credential for this site"
    d.find_element(By.ID, "current").send_keys(pw)
    d.find_element(By.ID, "new").send_keys(new_pw)
    d.find_element(By.ID, "new2").send_keys(new_pw)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(at("/account"))
    assert user in d.page_source and "診察室PC" in d.page_source, d.page_source
    d.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    wait.until(at("/login"))

    # Second sign-in: password, then the passkey (no TOTP form: none is enrolled).
    password_step(d, new_pw)
    wait.until(at("/login/totp"))
    assert "パスキーでログイン" in d.page_source and 'autocomplete="one-time-code"' not in d.page_source
    d.find_element(By.ID, "passkey-login").click()
    wait.until(at("/account"))
    assert user in d.page_source and "最終使用" in d.page_source, d.page_source
    sign_count = d.get_credentials()[0].sign_count
    assert sign_count >= 1, sign_count
finally:
    d.quit()

# A browser without the authenticator gets no further than the second step.
d = browser(False)
wait = WebDriverWait(d, 20)
try:
    password_step(d, new_pw)
    wait.until(at("/login/totp"))
    d.execute_script("navigator.credentials.get = () => Promise.reject(new Error('no authenticator'))")
    d.find_element(By.ID, "passkey-login").click()
    wait.until(EC.visibility_of_element_located((By.ID, "passkey-error")))
    assert urlsplit(d.current_url).path == "/login/totp"
    d.get(base + "/account")
    assert urlsplit(d.current_url).path != "/account", "no data before the second factor"
finally:
    d.quit()
print("ok")
