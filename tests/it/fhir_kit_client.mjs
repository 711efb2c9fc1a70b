// fhir-kit-client (Vermonster's FHIR client for Node), unchanged, against Mamori: a transaction
// posted to the base URL with its trailing slash, with urn:uuid references and a conditional
// update whose criteria hold a system URI (`://`). Used by tests/it/clients.rs.
//   node fhir_kit_client.mjs BASE TOKEN (run from a directory whose node_modules holds the client)     prints "ok" on success; any failed expectation throws
import assert from "node:assert";
import { Client } from "fhir-kit-client";

const [base, token] = process.argv.slice(2);
const client = new Client({ baseUrl: `${base}/fhir/`, customHeaders: { Authorization: `Bearer ${token}` } });
const MRN = "http://hospital.example/mrn";

async function main() {
  const bundle = {
    resourceType: "Bundle",
    type: "transaction",
    entry: [
      {
        fullUrl: "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
        resource: { resourceType: "Patient", name: [{ family: "鈴木" }], identifier: [{ system: MRN, value: "k1" }] },
        request: { method: "PUT", url: `Patient?identifier=${MRN}|k1` },
      },
      {
        fullUrl: "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
        resource: {
          resourceType: "Observation",
          status: "final",
          code: { coding: [{ system: "http://loinc.org", code: "8867-4" }] },
          subject: { reference: "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a" },
          valueQuantity: { value: 72, unit: "/min" },
        },
        request: { method: "POST", url: "Observation" },
      },
    ],
  };
  const out = await client.transaction({ body: bundle });
  assert.strictEqual(out.resourceType, "Bundle");
  assert.strictEqual(out.type, "transaction-response");
  assert.strictEqual(out.entry.length, 2);
  for (const e of out.entry) assert.match(e.response.status, /^201/);
  const patientId = out.entry[0].response.location.split("/")[1];
  // Again: the conditional update finds the patient by its MRN and updates it.
  const again = await client.transaction({ body: bundle });
  assert.match(again.entry[0].response.status, /^200/);
  assert.strictEqual(again.entry[0].response.location.split("/")[1], patientId);
  const found = await client.search({ resourceType: "Observation", searchParams: { subject: `Patient/${patientId}` } });
  assert.strictEqual(found.entry.length, 2);
  const patient = await client.read({ resourceType: "Patient", id: patientId });
  assert.strictEqual(patient.name[0].family, "鈴木");
  // A batch through the same trailing-slash base.
  const batch = await client.batch({
    body: { resourceType: "Bundle", type: "batch", entry: [{ request: { method: "GET", url: `Patient?identifier=${MRN}|k1` } }] },
  });
  assert.strictEqual(batch.type, "batch-response");
  assert.match(batch.entry[0].response.status, /^200/);
  assert.strictEqual(batch.entry[0].resource.total, 1);
  console.log("ok");
}

main().catch((e) => {
  console.error(e && e.response ? JSON.stringify(e.response.data) : e);
  process.exit(1);
});
