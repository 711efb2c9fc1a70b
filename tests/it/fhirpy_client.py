"""fhirpy (beda.software's FHIR client for Python), unchanged, against Mamori: count(), paging,
and conditional create both ways fhirpy can ask for it. Used by tests/it/clients.rs.

  fhirpy_client.py BASE TOKEN
Prints "ok" on success; any failed expectation raises.
"""
import sys

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

BASE, TOKEN = sys.argv[1].rstrip("/") + "/fhir", sys.argv[2]
MRN = "http://hospital.example/mrn"
client = SyncFHIRClient(BASE, authorization="Bearer " + TOKEN)


def patient(mrn):
    return client.resource("Patient", name=[{"family": "Yamada", "given": [mrn]}],
                           identifier=[{"system": MRN, "value": mrn}])


for i in range(25):
    patient(f"m{i}").save()
yamada = client.resources("Patient").search(family="Yamada")
assert yamada.count() == 25, yamada.count()
assert client.resources("Patient").search(family="Nobody").count() == 0
assert len(yamada.limit(10).fetch_all()) == 25, "paging with next links"
assert yamada.search(identifier=f"{MRN}|m3").first()["identifier"][0]["value"] == "m3"

# fhirpy's own conditional create puts the criteria in the URL (POST Patient?identifier=…),
# which R4 does not define: refused with an OperationOutcome that says what to send instead,
# and nothing is created.
for attempt in (lambda: patient("m0").create(identifier=f"{MRN}|m0"),
                lambda: client.resources("Patient").search(identifier=f"{MRN}|new").get_or_create(patient("new"))):
    try:
        attempt()
        raise AssertionError("a create with criteria in the URL must not create")
    except OperationOutcome as e:
        assert "If-None-Exist" in str(e), str(e)
assert yamada.count() == 25

# R4's conditional create: the criteria in If-None-Exist, as fhirpy sends any header.
def conditional(mrn):
    return SyncFHIRClient(BASE, authorization="Bearer " + TOKEN,
                          extra_headers={"If-None-Exist": f"identifier={MRN}|{mrn}"})


existing = conditional("m0").resource("Patient", name=[{"family": "Yamada"}],
                                      identifier=[{"system": MRN, "value": "m0"}])
existing.save()
assert yamada.count() == 25, "a match: nothing created"
created = conditional("m99").resource("Patient", name=[{"family": "Yamada"}],
                                      identifier=[{"system": MRN, "value": "m99"}])
created.save()
assert created.id
assert yamada.count() == 26
print("ok")
