"""Scrapes Mamori's /metrics as Prometheus would, with the official Python client's text-format
parser, before and after some load, and checks that the figures move. Used by
tests/it/operations.rs.

  metrics_client.py BASE TOKEN
Prints "ok" on success; any failed expectation raises.
"""
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

BASE, TOKEN = sys.argv[1], sys.argv[2]


def get(path, token=None):
    req = urllib.request.Request(BASE + path)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req) as r:
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
print("ok")
