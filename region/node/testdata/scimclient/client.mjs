// An independent SCIM client for Meridian's /scim/v2 (RFC 7643/7644),
// built on SCIMMY (not the project's code): SCIMMY's schema definitions
// coerce every request before it is sent and every resource the server
// returns (so a response that breaks the User, EnterpriseUser or Group
// schema fails), SCIMMY's filter evaluates each filter over all resources
// and must select what the server selected, and SCIMMY's PatchOp applies
// each PATCH to the resource it read and must give what the server gives.
//
// Usage: node client.mjs <base URL of entry A> <base URL of entry B> <token>
// Both entries are regional nodes of one federation; the token is a
// client_credentials access token with the scim scope. Prints
// "N passed, M failed" and exits non-zero on any failure.
import SCIMMY from "scimmy";

const [entryA, entryB, token] = process.argv.slice(2);
const USER = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

SCIMMY.Schemas.User.extend(SCIMMY.Schemas.EnterpriseUser, false);
const userDef = SCIMMY.Schemas.User.definition;
const groupDef = SCIMMY.Schemas.Group.definition;

let passed = 0, failed = 0;
function check(ok, what, detail) {
  if (ok) { passed++; return; }
  failed++;
  console.log(`FAIL: ${what}${detail === undefined ? "" : ": " + JSON.stringify(detail)}`);
}

async function call(entry, method, path, body, headers = {}) {
  const res = await fetch(entry + "/scim/v2" + path, {
    method,
    headers: { Authorization: "Bearer " + token, "Content-Type": "application/scim+json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

// coerces checks a server resource against SCIMMY's schema (outbound).
function coerces(def, resource, what) {
  try {
    def.coerce(resource, "out");
    check(true);
  } catch (e) {
    check(false, what + " does not conform to " + def.id, e.message);
  }
}

// scimmyMatches evaluates filter f on one resource with SCIMMY. SCIMMY
// 1.3.5 throws on a complex attribute the resource does not have (it reads
// its sub-attributes); an absent attribute matches nothing (RFC 7644
// §3.4.2.2), so a throw is no match.
function scimmyMatches(f, resource) {
  try {
    return new SCIMMY.Types.Filter(f).match([resource]).length === 1;
  } catch (e) {
    if (e instanceof TypeError) return false;
    throw e;
  }
}

function ids(list) { return list.map((r) => r.id).sort(); }

// Discovery.
for (const p of ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas"]) {
  const r = await call(entryB, "GET", p);
  check(r.status === 200, "GET " + p, r.status);
}
const spc = (await call(entryA, "GET", "/ServiceProviderConfig")).body;
try {
  SCIMMY.Schemas.ServiceProviderConfig.definition.coerce(spc, "out");
  check(true);
} catch (e) {
  check(false, "ServiceProviderConfig conforms", e.message);
}
check(spc.patch.supported && spc.filter.supported && spc.etag.supported && spc.sort.supported, "ServiceProviderConfig features", spc);

// Users, each request shaped by SCIMMY's inbound coercion, created
// alternately through both entries.
const people = [
  { userName: "grace.hopper", name: { givenName: "Grace", familyName: "Hopper" }, title: "Rear Admiral", active: true,
    emails: [{ value: "grace@navy.example", type: "work", primary: true }], [ENT]: { department: "Navy", employeeNumber: "1906" } },
  { userName: "alan.turing", name: { givenName: "Alan", familyName: "Turing" }, active: true,
    emails: [{ value: "alan@bletchley.example", type: "work" }, { value: "alan@home.example", type: "home" }] },
  { userName: "ada.lovelace", displayName: "Ada", active: false, emails: [{ value: "ada@engines.example", type: "other" }], phoneNumbers: [{ value: "+44 20 0000 0000", type: "work" }],
    [ENT]: { department: "Analytical Engines" } },
];
const created = [];
for (const [i, p] of people.entries()) {
  const payload = userDef.coerce({ schemas: [USER, ...(p[ENT] ? [ENT] : [])], ...p, password: "password-" + p.userName }, "in");
  const r = await call(i % 2 ? entryB : entryA, "POST", "/Users", { ...payload, schemas: [USER, ...(p[ENT] ? [ENT] : [])] });
  check(r.status === 201, "create " + p.userName, r.body);
  if (r.status !== 201) continue;
  coerces(userDef, r.body, "created " + p.userName);
  check(r.body.password === undefined, "no password in the answer");
  check(r.headers.get("etag") === r.body.meta.version, "ETag is meta.version", [r.headers.get("etag"), r.body.meta.version]);
  created.push(r.body);
}

// Every listed resource conforms; each filter selects what SCIMMY's does.
const all = (await call(entryB, "GET", "/Users?count=200")).body;
check(all.schemas[0] === "urn:ietf:params:scim:api:messages:2.0:ListResponse" && all.totalResults === created.length, "list", all);
for (const u of all.Resources) coerces(userDef, u, "listed " + u.userName);
for (const f of [
  `userName eq "alan.turing"`,
  `userName sw "a"`,
  `userName co "o"`,
  `title pr`,
  `not (title pr)`,
  `emails[type eq "work" and value co "bletchley"]`,
  `emails[type eq "home"] or displayName eq "Ada"`,
  `name.familyName eq "Hopper" and active eq true`,
  `active eq false`,
  `meta.created gt "2000-01-01T00:00:00Z"`,
]) {
  const r = await call(entryA, "GET", "/Users?filter=" + encodeURIComponent(f));
  check(r.status === 200, "filter " + f, r.body);
  if (r.status !== 200) continue;
  const want = ids(all.Resources.filter((u) => scimmyMatches(f, u)));
  check(JSON.stringify(ids(r.body.Resources)) === JSON.stringify(want), "filter " + f, { got: ids(r.body.Resources), want });
}

// SCIMMY 1.3.5 does not resolve a URN-qualified extension attribute in a
// filter (it matches nothing), so this one is checked against the data.
{
  const r = await call(entryA, "GET", "/Users?filter=" + encodeURIComponent(`${ENT}:department eq "Navy"`));
  check(r.status === 200 && JSON.stringify(ids(r.body.Resources)) === JSON.stringify([created[0].id]), "filter on the enterprise extension", r.body);
}

// Sorting and paging.
const sorted = (await call(entryA, "GET", "/Users?sortBy=userName&sortOrder=descending")).body.Resources.map((u) => u.userName);
check(JSON.stringify(sorted) === JSON.stringify([...sorted].sort().reverse()), "sortBy descending", sorted);
const page = (await call(entryB, "GET", "/Users?sortBy=userName&startIndex=2&count=1")).body;
check(page.Resources.length === 1 && page.Resources[0].userName === "alan.turing" && page.startIndex === 2, "page 2", page);

// PATCH: the server's result equals SCIMMY applying the same PatchOp.
const grace = created[0];
const ops = { schemas: [PATCH], Operations: [
  { op: "replace", path: "title", value: "Commodore" },
  { op: "add", path: "emails", value: [{ value: "grace@home.example", type: "home" }] },
  { op: "replace", path: `emails[type eq "work"].value`, value: "grace@fleet.example" },
  { op: "remove", path: `${ENT}:employeeNumber` },
] };
const expected = await new SCIMMY.Messages.PatchOp(ops).apply(new SCIMMY.Schemas.User(grace, "out"));
const patched = await call(entryB, "PATCH", "/Users/" + grace.id, ops, { "If-Match": grace.meta.version });
check(patched.status === 200, "patch grace", patched.body);
if (patched.status === 200) {
  coerces(userDef, patched.body, "patched grace");
  const pick = (u) => JSON.stringify({ title: u.title, emails: (u.emails || []).map((e) => [e.type, e.value]).sort(),
    emp: (u[ENT] || {}).employeeNumber, dept: (u[ENT] || {}).department });
  check(pick(patched.body) === pick(expected), "patch result equals SCIMMY's", { got: pick(patched.body), want: pick(expected) });
}
const stale = await call(entryA, "PATCH", "/Users/" + grace.id, ops, { "If-Match": grace.meta.version });
check(stale.status === 412, "stale If-Match", stale.status);
const badPath = await call(entryA, "PATCH", "/Users/" + grace.id, { schemas: [PATCH], Operations: [{ op: "replace", path: "nickname[", value: "x" }] });
check(badPath.status === 400 && badPath.body.scimType === "invalidPath", "bad PATCH path", badPath.body);

// Groups.
const g = await call(entryA, "POST", "/Groups", groupDef.coerce({ schemas: [GROUP], displayName: "Pioneers",
  members: created.slice(0, 2).map((u) => ({ value: u.id })) }, "in"));
check(g.status === 201, "create group", g.body);
if (g.status === 201) {
  coerces(groupDef, g.body, "group");
  const byMember = await call(entryB, "GET", "/Groups?filter=" + encodeURIComponent(`members[value eq "${created[1].id}"]`));
  check(byMember.body.totalResults === 1, "group by member", byMember.body);
  const alan = await call(entryB, "GET", "/Users/" + created[1].id);
  check((alan.body.groups || []).some((x) => x.value === g.body.id), "user lists its group", alan.body);
  check((await call(entryB, "DELETE", "/Groups/" + g.body.id)).status === 204, "delete group");
}

// Errors are SCIM error bodies.
const missing = await call(entryA, "GET", "/Users/" + created[0].id.replace(/.$/, (c) => (c === "A" ? "B" : "A")));
check(missing.status === 404 && missing.body.schemas[0] === "urn:ietf:params:scim:api:messages:2.0:Error", "unknown id", missing.body);

// Clean up: every user deleted through the other entry.
for (const u of created) check((await call(entryB, "DELETE", "/Users/" + u.id)).status === 204, "delete " + u.userName);
check((await call(entryA, "GET", "/Users")).body.totalResults === 0, "all deleted");

console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
