#!/usr/bin/env python3
"""Generate crates/fhir-schema/data/r4-schema.json from the official FHIR R4 StructureDefinitions.

Usage: scripts/gen-fhir-schema.py PATH/TO/hl7.fhir.r4.examples/package
(`npm pack hl7.fhir.r4.examples@4.0.1` and untar; the FHIR specification is CC0.)

The output is compact: for every resource, complex datatype and backbone element, each child
element's allowed type codes, whether it repeats and whether it is a summary element. Choice elements keep their `[x]` name.
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

def main(pkg):
    out = {"fhirVersion": "4.0.1", "primitives": [], "resources": [], "types": {}}
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
            # Flags: bit 0 = repeats (max > 1), bit 1 = in the summary (`_summary=true`).
            flags = (1 if el.get("max") not in ("0", "1") else 0) | (2 if el.get("isSummary") else 0)
            out["types"].setdefault(parent, {})[child] = [codes, flags]
    out["primitives"].sort()
    out["resources"].sort()
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=True)

if __name__ == "__main__":
    main(sys.argv[1])
