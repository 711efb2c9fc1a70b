#!/usr/bin/env python3
"""Generate crates/fhir-schema/data/r4-schema.json from the official FHIR R4 StructureDefinitions.

Usage: scripts/gen-fhir-schema.py PATH/TO/hl7.fhir.r4.examples/package
(`npm pack hl7.fhir.r4.examples@4.0.1` and untar; the FHIR specification is CC0.)

The output is compact: for every resource, complex datatype and backbone element, each child
element's allowed type codes, whether it repeats, whether it is a summary element and whether it
is required (min cardinality 1). Choice elements keep their `[x]` name.

`bindings` maps each element path with a **required** binding to its value set's URL, and
`valueSets` gives each such value set expanded from the same package as `[[system, [codes]]…]`.
A value set that cannot be expanded from the package (it names a code system the package does not
hold in full — BCP 13 media types, UCUM, ISO 4217 — or uses filters) is left out, and its
bindings with it: they are not enforced.
"""
import glob, json, os, sys

FHIRPATH = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"

def type_code(t):
    for ext in t.get("extension", []):
        if ext.get("url") == FHIR_TYPE_EXT:
            return ext.get("valueUrl") or ext.get("valueUri")
    c = t["code"]
    return FHIRPATH.get(c, c)

def all_codes(concepts):
    for c in concepts:
        yield c["code"]
        yield from all_codes(c.get("concept", []))

def expand(url, value_sets, code_systems, seen=()):
    """{system: set(codes)} for a value set, or None if the package cannot expand it."""
    url = url.split("|")[0]
    vs = value_sets.get(url)
    if vs is None or url in seen or "compose" not in vs:
        return None
    def part(inc):
        out = {}
        if "filter" in inc:
            return None
        for u in inc.get("valueSet", []):
            sub = expand(u, value_sets, code_systems, seen + (url,))
            if sub is None:
                return None
            for k, v in sub.items():
                out.setdefault(k, set()).update(v)
        if "system" in inc:
            if "concept" in inc:
                codes = {c["code"] for c in inc["concept"]}
            else:
                cs = code_systems.get(inc["system"])
                if cs is None or cs.get("content") != "complete":
                    return None
                codes = set(all_codes(cs.get("concept", [])))
            if "valueSet" in inc:
                # both: the intersection (R4 ValueSet.compose.include semantics)
                codes &= out.get(inc["system"], set())
                out = {}
            out.setdefault(inc["system"], set()).update(codes)
        return out
    result = {}
    for inc in vs["compose"].get("include", []):
        p = part(inc)
        if p is None:
            return None
        for k, v in p.items():
            result.setdefault(k, set()).update(v)
    for exc in vs["compose"].get("exclude", []):
        p = part(exc)
        if p is None:
            return None
        for k, v in p.items():
            result[k] = result.get(k, set()) - v
    return result

def main(pkg):
    out = {"fhirVersion": "4.0.1", "primitives": [], "resources": [], "types": {}, "bindings": {}, "valueSets": {}}
    value_sets, code_systems = {}, {}
    for f in glob.glob(os.path.join(pkg, "ValueSet-*.json")):
        v = json.load(open(f))
        value_sets[v["url"]] = v
    for f in glob.glob(os.path.join(pkg, "CodeSystem-*.json")):
        c = json.load(open(f))
        code_systems[c["url"]] = c
    for f in sorted(glob.glob(os.path.join(pkg, "StructureDefinition-*.json"))):
        sd = json.load(open(f))
        if sd.get("derivation") != "specialization" and sd.get("kind") != "logical" and sd.get("baseDefinition"):
            continue  # profiles (constraints) are not base structures
        kind = sd.get("kind")
        name = sd["type"]
        if kind == "logical":
            continue
        if kind == "primitive-type":
            out["primitives"].append(name)
            continue
        if kind == "resource" and not sd.get("abstract"):
            out["resources"].append(name)
        for el in sd["snapshot"]["element"]:
            path = el["path"]
            if "." not in path or el.get("sliceName"):
                continue
            parent, child = path.rsplit(".", 1)
            if el.get("max") == "0":
                continue
            if "contentReference" in el:
                codes = [el["contentReference"].lstrip("#")]
            else:
                codes = []
                for t in el.get("type", []):
                    c = type_code(t)
                    if c in ("BackboneElement", "Element") and not child.endswith("[x]"):
                        c = path
                    if c not in codes:
                        codes.append(c)
            # Flags: bit 0 = repeats (max > 1), bit 1 = in the summary (`_summary=true`),
            # bit 2 = required (min >= 1).
            flags = (1 if el.get("max") not in ("0", "1") else 0) | (2 if el.get("isSummary") else 0)
            flags |= 4 if el.get("min", 0) >= 1 else 0
            out["types"].setdefault(parent, {})[child] = [codes, flags]
            b = el.get("binding")
            if b and b.get("strength") == "required" and b.get("valueSet") and "contentReference" not in el:
                url = b["valueSet"].split("|")[0]
                expanded = expand(url, value_sets, code_systems)
                if expanded:
                    out["bindings"][path] = url
                    out["valueSets"][url] = sorted([sys_, sorted(c)] for sys_, c in expanded.items())
    out["primitives"].sort()
    out["resources"].sort()
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=True)

if __name__ == "__main__":
    main(sys.argv[1])
