#!/usr/bin/env python3
"""Generate crates/fhir-schema/data/r4-search-params.json from the official R4 SearchParameter
resources (1,400 of them, CC0; the experimental extension examples are left out).

Usage: scripts/gen-search-params.py PATH/TO/hl7.fhir.r4.examples/package
(`npm pack hl7.fhir.r4.examples@4.0.1` and untar.)

Output: {base type: {code: [type, expression, [target types], [[component code, expression]…]]}}.
Parameters on `Resource` and `DomainResource` apply to every type. A parameter with several
bases keeps, for each base, the alternatives of its expression rooted at that base.
"""
import glob, json, os, sys

def main(pkg):
    params = []
    for f in sorted(glob.glob(os.path.join(pkg, "SearchParameter-*.json"))):
        sp = json.load(open(f))
        if not sp.get("url", "").startswith("http://hl7.org/fhir/SearchParameter/") or not sp.get("base") or sp.get("experimental"):
            continue
        params.append(sp)
    by_url = {sp["url"]: sp for sp in params}
    out = {}
    for sp in params:
        comps = []
        for c in sp.get("component", []):
            d = by_url.get(c["definition"])
            if d is None:
                break
            comps.append([d["code"], d["type"], c["expression"]])
        else:
            expr = sp.get("expression", "")
            for base in sp["base"]:
                alts = [a for a in expr.split(" | ") if a.lstrip("(") == base or a.lstrip("(").startswith(base + ".")]
                mine = " | ".join(alts) if alts else expr
                out.setdefault(base, {})[sp["code"]] = [sp["type"], mine, sorted(sp.get("target", [])), comps]
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=True)

if __name__ == "__main__":
    main(sys.argv[1])
