"""Scrapes Mamori's /metrics as Prometheus would, with the official Python client's text-format
parser, before and after some load, and checks that the figures move. Used by
tests/it/operations.rs.

  metrics_client.py BASE TOKEN USER
TOKEN is a system client's token (client_credentials, so one token was issued before the first
scrape); USER an account whose lockout threshold is 3 (it is locked by this script).
Prints "ok" on success; any failed expectation raises.
"""
import http.cookiejar
import re
import sys
import time
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

BASE, TOKEN, USER = sys.argv[1], sys.argv[2], sys.argv[3]
browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def get(path, token=None, data=None, headers=None, opener=None):
    req = urllib.request.Request(BASE + path, data=data, headers=headers or {})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with (opener or urllib.request.build_opener()).open(req) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def scrape():
    status, headers, body = get("/metrics")
    assert status == 200, status
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers["Content-Type"]
    families = {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}
    return families


def total(families, name, **labels):
    return sum(s.value for f in families.values() for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


before = scrape()
for family in ("mamori_http_requests", "mamori_http_request_duration_seconds", "mamori_audit_entries",
               "mamori_store_commits", "mamori_build_info", "process_start_time_seconds", "mamori_ready"):
    assert family in before, f"{family} missing: {sorted(before)}"
assert before["mamori_http_request_duration_seconds"].type == "histogram"
assert before["mamori_http_requests"].type == "counter"
audit_before = total(before, "mamori_audit_entries")

for _ in range(20):
    assert get("/healthz")[0] == 200
for _ in range(5):
    assert get("/fhir/Patient?_count=1", TOKEN)[0] == 200
    assert get("/fhir/Patient/does-not-exist", TOKEN)[0] == 404
assert get("/fhir/Patient")[0] == 401

after = scrape()
grew = total(after, "mamori_http_requests_total", route="/healthz", status="200") - \
    total(before, "mamori_http_requests_total", route="/healthz", status="200")
assert grew == 20, grew
assert total(after, "mamori_http_requests_total", route="/fhir/{rtype}", status="200", principal="client") >= 5
assert total(after, "mamori_http_requests_total", route="/fhir/{rtype}/{id}", status="404", principal="client") >= 5
assert total(after, "mamori_http_requests_total", route="/fhir/{rtype}", status="401", principal="none") >= 1
count = total(after, "mamori_http_request_duration_seconds_count", route="/healthz") - \
    total(before, "mamori_http_request_duration_seconds_count", route="/healthz")
assert count == 20, count
inf = total(after, "mamori_http_request_duration_seconds_bucket", route="/healthz", le="+Inf")
assert inf == total(after, "mamori_http_request_duration_seconds_count", route="/healthz")
assert total(after, "mamori_audit_entries") >= audit_before + 11, (audit_before, total(after, "mamori_audit_entries"))
assert total(after, "mamori_ready") == 1
assert total(after, "mamori_store_size_bytes") > 0
assert "mamori_audit_writer_queue" in after and total(after, "mamori_audit_writer_queue") >= 0

# Security events, counted where they are audited: tokens issued and refused, sign-in failures
# and the lockout they end in. A sign-in from the pages, as a browser: form, CSRF token, cookie.
events = "mamori_audit_events_total"
assert after[events.removesuffix("_total")].type == "counter"
assert total(before, events, action="token", outcome="success") >= 1
form = "application/x-www-form-urlencoded"
bad = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "metrics-load",
                              "client_secret": "not-the-secret"}).encode()
assert get("/oauth/token", data=bad, headers={"Content-Type": form})[0] == 401
page = get("/login", opener=browser)[2].decode()
for attempt in range(3):
    csrf = re.search(r'name="csrf" value="([0-9a-f]{32})"', page).group(1)
    data = urllib.parse.urlencode({"username": USER, "password": "Wrong#pass123", "csrf": csrf}).encode()
    status, _, body = get("/login", data=data, headers={"Content-Type": form}, opener=browser)
    assert status == 401, status
    page = body.decode()
    time.sleep(2.2 if attempt else 1.2)  # the retry delays after the first and second failure
locked = scrape()
def grew(name, **labels):
    return total(locked, name, **labels) - total(after, name, **labels)
assert grew(events, action="token", outcome="denied") == 1, grew(events, action="token", outcome="denied")
assert grew(events, action="login", outcome="denied") == 3, grew(events, action="login", outcome="denied")
assert grew(events, action="alert-lock") == 1, grew(events, action="alert-lock")
assert grew(events, action="token", outcome="success") == 0

# A background job's state: a bulk export runs, then is counted as completed.
jobs = "mamori_bulk_export_jobs"
assert {s.labels["state"] for s in locked[jobs].samples} == {"running", "completed", "failed"}
status, headers, _ = get("/fhir/$export", TOKEN, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
assert status == 202, status
poll = urllib.parse.urlparse(headers["Content-Location"]).path
for _ in range(300):
    if get(poll, TOKEN)[0] == 200:
        break
    time.sleep(0.1)
else:
    raise AssertionError("the export did not complete")
done = scrape()
assert total(done, jobs, state="completed") == total(locked, jobs, state="completed") + 1
assert total(done, jobs, state="running") == 0
print("ok")
