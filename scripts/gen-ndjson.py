#!/usr/bin/env python3
"""Synthetic FHIR R4 NDJSON for load tests: Japanese patients (kanji and kana names, a patient
number, birth date) and vital-sign / lab Observations referencing them. Deterministic (seeded).

Usage: scripts/gen-ndjson.py TOTAL_RESOURCES [OUT.ndjson]   (1 patient per 50 resources)
"""
import json
import random
import sys

total = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
out = open(sys.argv[2], "w", encoding="utf-8") if len(sys.argv) > 2 else sys.stdout
rnd = random.Random(20261121)
FAMILY = [("山田", "ヤマダ"), ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("田中", "タナカ"), ("伊藤", "イトウ"), ("渡辺", "ワタナベ"), ("中村", "ナカムラ")]
GIVEN = [("太郎", "タロウ"), ("花子", "ハナコ"), ("一郎", "イチロウ"), ("美咲", "ミサキ"), ("翔", "ショウ"), ("陽菜", "ヒナ")]
CODES = [("8310-5", "体温", "Cel", 35.5, 39.0), ("8867-4", "心拍数", "/min", 50, 120), ("2345-7", "血糖", "mg/dL", 70, 200), ("718-7", "ヘモグロビン", "g/dL", 10, 17)]
patients = max(1, total // 50)
for i in range(patients):
    f, g = rnd.choice(FAMILY), rnd.choice(GIVEN)
    p = {
        "resourceType": "Patient", "id": f"pt-{i:07d}",
        "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": f"{i:08d}"}],
        "name": [
            {"use": "official", "text": f"{f[0]} {g[0]}", "family": f[0], "given": [g[0]],
             "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "IDE"}]},
            {"use": "official", "text": f"{f[1]} {g[1]}", "family": f[1], "given": [g[1]],
             "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "SYL"}]},
        ],
        "gender": rnd.choice(["male", "female"]),
        "birthDate": f"{rnd.randint(1930, 2020)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
    }
    out.write(json.dumps(p, ensure_ascii=False) + "\n")
for j in range(total - patients):
    code, text, unit, lo, hi = rnd.choice(CODES)
    o = {
        "resourceType": "Observation", "id": f"obs-{j:08d}", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs" if code in ("8310-5", "8867-4") else "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": text},
        "subject": {"reference": f"Patient/pt-{rnd.randrange(patients):07d}"},
        "effectiveDateTime": f"2026-{rnd.randint(1, 11):02d}-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:00:00+09:00",
        "valueQuantity": {"value": round(rnd.uniform(lo, hi), 1), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }
    out.write(json.dumps(o, ensure_ascii=False) + "\n")
