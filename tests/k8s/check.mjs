// Offline checks of rendered Kubernetes manifests (the output of `kubectl kustomize`):
//  - every object against the Kubernetes API schemas (kubernetes-models' validate(), which runs
//    the API's JSON schemas), plus a walk of the same models' type declarations that rejects
//    fields the API does not have (validate() lets unknown fields through);
//  - consistency with the processes: every variable a Sidecast container gets is one its
//    process reads (`build/<name> --help`), every file variable points at a mounted key,
//    probes and Services reach the port the process listens on, the grace period covers the
//    preStop sleep and the process's own shutdown, the Ingress outlasts the edge's pings, the
//    public URLs agree with the Ingress, NATS_URL and REDIS_URL point at what is deployed.
// Prints PASS/FAIL per check and a closing "N passed, N failed" line.
//
// Usage: node check.mjs LABEL=FILE... (e.g. base=/tmp/base.yaml dev=/tmp/dev.yaml)
// Environment: BUILD (default build), ROOT (default the repository), NATS_SERVER (nats-server
// for checking the NATS configuration; skipped with a note when absent).
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = process.env.ROOT || path.resolve(HERE, "..", "..");
const BUILD = path.resolve(ROOT, process.env.BUILD || "build");
const MODELS = path.join(HERE, "node_modules", "kubernetes-models");
const APIMACHINERY = path.join(HERE, "node_modules", "@kubernetes-models", "apimachinery");

const PROCESSES = ["gateway", "auth", "edge", "producer", "bridge"];
// Processes an overlay adds when wanted (k8s/overlays/dev-bridge): not missing elsewhere.
const OPTIONAL = new Set(["bridge"]);
// The variable holding the address each process serves /healthz and /readyz on.
const LISTEN_KEY = { gateway: "GATEWAY_LISTEN", edge: "EDGE_LISTEN", auth: "ADMIN_LISTEN",
                     producer: "ADMIN_LISTEN", bridge: "ADMIN_LISTEN" };
// What a process may take after SIGTERM, in seconds, from its configuration (c: key -> value):
// gateway: 10 s for requests in flight + 2 s to close NATS (GW_DRAIN_MS, GW_BUS_DRAIN_MS in
// services/gateway/main.c); auth, producer and bridge: DRAIN_TIMEOUT_MS to close NATS; edge:
// EDGE_DRAIN_TIMEOUT_MS + 3 s for the last closing handshakes + 2 s to close NATS
// (services/edge/main.c).
const SHUTDOWN_S = {
  gateway: () => 10 + 2,
  auth: (c) => Number(c.DRAIN_TIMEOUT_MS) / 1000,
  producer: (c) => Number(c.DRAIN_TIMEOUT_MS) / 1000,
  bridge: (c) => Number(c.DRAIN_TIMEOUT_MS) / 1000,
  edge: (c) => Number(c.EDGE_DRAIN_TIMEOUT_MS) / 1000 + 3 + 2,
};
// Objects the base leaves to an overlay (the keys): references to them are fine in the base.
const OVERLAY_PROVIDES = new Set(["Secret/sidecast-auth", "Secret/sidecast-bus",
                                  "ConfigMap/sidecast-public-keys"]);
const WORKLOADS = new Set(["Deployment", "StatefulSet", "DaemonSet", "Job"]);
const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding",
                                "PersistentVolume", "StorageClass", "IngressClass"]);

let passed = 0;
let failed = 0;
function report(name, problems, detail) {
  if (problems.length === 0) {
    passed++;
    console.log(`PASS ${name}${detail ? ": " + detail : ""}`);
  } else {
    failed++;
    console.log(`FAIL ${name}`);
    for (const p of problems) console.log(`       ${p}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Strict fields: the models' .d.ts files declare every field of every API type.

const types = new Map(); // interface name (local and exported alias) -> Map(field -> type)

function parseDeclarations(file) {
  const text = fs.readFileSync(file, "utf8");
  const local = new Map();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m = /^export interface (\w+)(?: extends ([\w, ]+))? \{$/.exec(lines[i]);
    if (!m) continue;
    const fields = new Map();
    if (m[2] && /\bTypeMeta\b/.test(m[2])) {
      fields.set("apiVersion", "string");
      fields.set("kind", "string");
    }
    for (i++; i < lines.length && lines[i] !== "}"; i++) {
      const f = /^ {4}"([^"]+)"\??: (.*)$/.exec(lines[i]);
      if (!f) continue;
      let type = f[2];
      if (type === "{") { // a map type spanning lines: { [key: string]: T; }
        const body = [];
        for (i++; i < lines.length && !/^ {4}\};?$/.test(lines[i]); i++) body.push(lines[i].trim());
        type = "{ " + body.join(" ") + " }";
      }
      fields.set(f[1], type.replace(/;$/, ""));
    }
    local.set(m[1], fields);
  }
  for (const [name, fields] of local) types.set(name, fields);
  const exp = /^export \{ ([^}]*) \};$/m.exec(text);
  if (exp) {
    for (const pair of exp[1].split(",")) {
      const a = /(\w+) as (\w+)/.exec(pair.trim());
      if (a && local.has(a[1])) types.set(a[2], local.get(a[1]));
    }
  }
  return local;
}

function walkDeclarations(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && e.name !== "node_modules") walkDeclarations(p);
    else if (e.name.endsWith(".d.ts")) parseDeclarations(p);
  }
}

// Reports every field of value that its declared type does not have.
function unknownFields(value, type, where, out) {
  type = type.trim();
  let m;
  if ((m = /^Array<(.*)>$/.exec(type))) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, m[1], `${where}[${i}]`, out));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.*?);? \}$/.exec(type))) {
    if (value && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) unknownFields(v, m[1], `${where}.${k}`, out);
    }
    return;
  }
  const fields = types.get(type);
  if (!fields || !value || typeof value !== "object" || Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) out.push(`${where}.${k}: no such field in ${type.replace(/^IIoK8s/, "")}`);
    else unknownFields(v, fields.get(k), `${where}.${k}`, out);
  }
}

async function schemaCheck(label, obj) {
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/")
    : [null, obj.apiVersion];
  const dir = group ? path.join(MODELS, group, version) : path.join(MODELS, version);
  const name = `[${label}] schema ${obj.apiVersion} ${obj.kind} ${obj.metadata?.name}`;
  const problems = [];
  const modelFile = path.join(dir, `${obj.kind}.mjs`);
  if (!fs.existsSync(modelFile)) {
    report(name, [`no model for ${obj.apiVersion} ${obj.kind} (not a Kubernetes API type?)`]);
    return;
  }
  const mod = await import(modelFile);
  const Model = mod[obj.kind];
  // kustomize wraps a Secret's base64 values over lines; the API server's decoder skips the
  // line breaks, the schema's "byte" format does not.
  const subject = obj.kind === "Secret" && obj.data
    ? { ...obj, data: Object.fromEntries(Object.entries(obj.data).map(([k, v]) => [k, String(v).replace(/\s+/g, "")])) }
    : obj;
  try {
    new Model(subject).validate();
  } catch (e) {
    problems.push(`validate(): ${e.message}`);
  }
  const local = parseDeclarations(path.join(dir, `${obj.kind}.d.ts`));
  const top = local.get(`I${obj.kind}`);
  if (!top) problems.push(`no type declaration I${obj.kind}`);
  else {
    types.set(`I${obj.kind}`, top);
    unknownFields(obj, `I${obj.kind}`, obj.kind, problems);
  }
  report(name, problems, "validate() and no unknown fields");
}

// ---------------------------------------------------------------------------------------------
// The processes' configuration tables.

function helpOf(proc) {
  const bin = path.join(BUILD, proc);
  const out = execFileSync(bin, ["--help"], { encoding: "utf8", timeout: 10000 });
  const keys = new Map();
  let last = null;
  for (const line of out.split("\n")) {
    let m;
    if ((m = /^ {2}([A-Z][A-Z0-9_]+)\s+(\S+)\s+/.exec(line))) {
      last = { name: m[1], type: m[2], def: undefined, required: false };
      keys.set(m[1], last);
    } else if (last && (m = /^\s+default: (.*)$/.exec(line))) {
      last.def = m[1] === "(empty)" ? "" : m[1];
    } else if (last && line.trim() === "(required)") {
      last.required = true;
    }
  }
  if (keys.size === 0) throw new Error(`${bin} --help listed no variables`);
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Helpers over one rendered set of objects.

class Render {
  constructor(label, objects) {
    this.label = label;
    this.objects = objects;
  }
  all(kind) { return this.objects.filter((o) => o.kind === kind); }
  find(kind, name) { return this.objects.find((o) => o.kind === kind && o.metadata?.name === name); }
  // The data of a ConfigMap/Secret as text, or undefined when it is not in the render (names
  // as rendered: kustomize has already given the references their generated names).
  data(kind, name) {
    const o = this.find(kind, name);
    if (!o) return undefined;
    const d = { ...(o.data || {}) };
    if (kind === "Secret") {
      for (const k of Object.keys(d)) d[k] = Buffer.from(d[k], "base64").toString("utf8");
      Object.assign(d, o.stringData || {});
    }
    return d;
  }
  // Whether a missing kind/name is one the base leaves to an overlay (not generated in the
  // base, so its references keep the plain name).
  providedLater(kind, name) {
    return this.label === "base" && OVERLAY_PROVIDES.has(`${kind}/${name}`);
  }
  workloads() { return this.objects.filter((o) => WORKLOADS.has(o.kind)); }
  podSpec(w) { return w.spec?.template?.spec || {}; }
  podLabels(w) { return w.spec?.template?.metadata?.labels || {}; }
}

function matches(selector, labels) {
  const entries = Object.entries(selector || {});
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

function sidecastProcess(container) {
  const m = /^sidecast\/([a-z0-9-]+)(?::|@|$)/.exec(container.image || "");
  return m ? m[1] : null;
}

// The environment a container gets: name -> {value, from}. Problems go to out.
function environment(r, container, out) {
  const env = new Map();
  for (const src of container.envFrom || []) {
    const ref = src.configMapRef || src.secretRef;
    const kind = src.configMapRef ? "ConfigMap" : "Secret";
    const data = r.data(kind, ref.name);
    if (!data) {
      if (!r.providedLater(kind, ref.name) && !ref.optional) out.push(`envFrom ${kind} ${ref.name}: not in the render`);
      continue;
    }
    for (const [k, v] of Object.entries(data)) env.set((src.prefix || "") + k, { value: v, from: `${kind} ${ref.name}` });
  }
  for (const e of container.env || []) {
    if ("value" in e || !e.valueFrom) { env.set(e.name, { value: e.value ?? "", from: "value" }); continue; }
    const vf = e.valueFrom;
    const ref = vf.configMapKeyRef || vf.secretKeyRef;
    if (ref) {
      const kind = vf.configMapKeyRef ? "ConfigMap" : "Secret";
      const data = r.data(kind, ref.name);
      if (!data) {
        if (!r.providedLater(kind, ref.name) && !ref.optional) out.push(`${e.name}: ${kind} ${ref.name} is not in the render`);
        env.set(e.name, { value: undefined, from: `${kind} ${ref.name}` });
      } else if (!(ref.key in data)) {
        if (!ref.optional) out.push(`${e.name}: ${kind} ${ref.name} has no key ${ref.key}`);
        env.set(e.name, { value: undefined, from: `${kind} ${ref.name}` });
      } else {
        env.set(e.name, { value: data[ref.key], from: `${kind} ${ref.name}` });
      }
    } else if (vf.fieldRef) {
      env.set(e.name, { value: `<${vf.fieldRef.fieldPath}>`, from: "fieldRef" });
    } else {
      env.set(e.name, { value: undefined, from: "resourceFieldRef" });
    }
  }
  return env;
}

// Effective configuration of a process: what the container sets, else the default.
function effective(help, env) {
  const c = {};
  for (const [k, h] of help) c[k] = env.has(k) && env.get(k).value !== undefined ? env.get(k).value : h.def;
  return c;
}

function portOf(addr) {
  const m = /^(.*):(\d+)$/.exec(addr || "");
  return m ? { host: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) } : null;
}

function containerPort(container, port) {
  if (typeof port === "number") return (container.ports || []).some((p) => p.containerPort === port) ? port : null;
  const p = (container.ports || []).find((q) => q.name === port);
  return p ? p.containerPort : null;
}

function preStopSeconds(container) {
  const h = container.lifecycle?.preStop;
  if (!h) return 0;
  if (h.sleep) return Number(h.sleep.seconds);
  const cmd = h.exec?.command || [];
  const i = cmd.findIndex((a) => /(^|\/)sleep$/.test(a));
  return i >= 0 ? Number(cmd[i + 1]) || 0 : 0;
}

// sizes as nats-server and Kubernetes write them -> bytes
function bytes(s) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*$/i.exec(String(s));
  if (!m) return NaN;
  const unit = (m[2] || "").toUpperCase();
  const pow = { "": 0, K: 1, M: 2, G: 3, T: 4 }[unit[0] || ""];
  const base = unit.endsWith("I") ? 1024 : 1000;
  return Number(m[1]) * base ** pow;
}

// ---------------------------------------------------------------------------------------------
// The checks.

function checkNamespace(r) {
  const problems = [];
  const nss = r.all("Namespace");
  if (nss.length !== 1) problems.push(`${nss.length} Namespace objects (want 1)`);
  const ns = nss[0]?.metadata?.name;
  for (const o of r.objects) {
    if (CLUSTER_SCOPED.has(o.kind)) continue;
    if (o.metadata?.namespace !== ns) problems.push(`${o.kind} ${o.metadata?.name}: namespace ${o.metadata?.namespace ?? "(none)"}, not ${ns}`);
  }
  report(`[${r.label}] namespace`, problems, `every namespaced object in ${ns}`);
}

// Every ConfigMap and Secret a pod refers to (volumes, env, envFrom) is in the render.
function checkReferences(r) {
  const problems = [];
  let n = 0;
  const need = (w, kind, name, optional) => {
    n++;
    if (!r.find(kind, name) && !optional && !r.providedLater(kind, name)) {
      problems.push(`${w.kind} ${w.metadata.name}: ${kind} ${name} is not in the render`);
    }
  };
  for (const w of r.workloads()) {
    const spec = r.podSpec(w);
    for (const v of spec.volumes || []) {
      if (v.configMap) need(w, "ConfigMap", v.configMap.name, v.configMap.optional);
      if (v.secret) need(w, "Secret", v.secret.secretName, v.secret.optional);
      for (const s of v.projected?.sources || []) {
        if (s.configMap) need(w, "ConfigMap", s.configMap.name, s.configMap.optional);
        if (s.secret) need(w, "Secret", s.secret.name, s.secret.optional);
      }
    }
    for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
      for (const e of c.env || []) {
        const vf = e.valueFrom || {};
        if (vf.configMapKeyRef) need(w, "ConfigMap", vf.configMapKeyRef.name, vf.configMapKeyRef.optional);
        if (vf.secretKeyRef) need(w, "Secret", vf.secretKeyRef.name, vf.secretKeyRef.optional);
      }
      for (const e of c.envFrom || []) {
        if (e.configMapRef) need(w, "ConfigMap", e.configMapRef.name, e.configMapRef.optional);
        if (e.secretRef) need(w, "Secret", e.secretRef.name, e.secretRef.optional);
      }
    }
  }
  report(`[${r.label}] references`, problems, `${n} references to ConfigMaps and Secrets, each in the render` +
    (r.label === "base" ? ` (or left to an overlay: ${[...OVERLAY_PROVIDES].join(", ")})` : ""));
}

function checkImages(r) {
  const problems = [];
  const seen = [];
  for (const w of r.workloads()) {
    const spec = r.podSpec(w);
    for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
      const img = c.image || "";
      seen.push(img);
      const proc = sidecastProcess(c);
      if (proc) {
        if (!PROCESSES.includes(proc)) problems.push(`${w.metadata.name}/${c.name}: ${img}: not one of sidecast/{${PROCESSES.join(",")}}`);
        if (c.name !== proc) problems.push(`${w.metadata.name}/${c.name}: runs ${img} under another name`);
        if (!/^sidecast\/[a-z0-9-]+:[\w][\w.-]*$/.test(img)) problems.push(`${w.metadata.name}/${c.name}: ${img}: want sidecast/<name>:<tag>`);
      } else if (!/^(nats|redis):[\w][\w.-]*$/.test(img)) {
        // Docker Hub's official images have no registry host and no namespace.
        problems.push(`${w.metadata.name}/${c.name}: ${img}: only sidecast/<name>:<tag> and Docker Hub's official nats:<tag> / redis:<tag>`);
      }
    }
  }
  report(`[${r.label}] images`, problems, [...new Set(seen)].sort().join(" "));
}

function sidecastContainers(r) {
  const out = [];
  for (const w of r.all("Deployment")) {
    for (const c of r.podSpec(w).containers || []) {
      const proc = sidecastProcess(c);
      if (proc && PROCESSES.includes(proc)) out.push({ w, c, proc });
    }
  }
  return out;
}

function checkEnv(r, help) {
  const found = new Set();
  for (const { w, c, proc } of sidecastContainers(r)) {
    found.add(proc);
    const problems = [];
    const env = environment(r, c, problems);
    const h = help[proc];
    for (const name of env.keys()) {
      if (!h.has(name)) problems.push(`${name} (${env.get(name).from}): build/${proc} does not read it (not in --help)`);
    }
    const required = [...h.values()].filter((k) => k.required);
    for (const k of required) if (!env.has(k.name)) problems.push(`${k.name}: required by ${proc}, not set`);
    for (const [name, { value }] of env) {
      if (h.has(name) && value === "" && h.get(name).required) problems.push(`${name}: required, empty`);
    }
    report(`[${r.label}] env ${w.metadata.name}`, problems,
      `${env.size} variables, each read by build/${proc} --help; ${required.length} required set`);
  }
  const missing = PROCESSES.filter((p) => !found.has(p) && !OPTIONAL.has(p));
  if (missing.length) report(`[${r.label}] every process deployed`, missing.map((p) => `no Deployment runs sidecast/${p}`));
}

// Every key of deploy/config/sidecast.env must reach each container whose process reads it,
// or the shared configuration would silently not apply in the cluster.
function checkConfigFile(r, help) {
  const file = path.join(ROOT, "deploy", "config", "sidecast.env");
  const keys = fs.readFileSync(file, "utf8").split("\n")
    .map((l) => /^([A-Z][A-Z0-9_]*)=/.exec(l.trim())).filter(Boolean).map((m) => m[1]);
  const problems = [];
  for (const { w, c, proc } of sidecastContainers(r)) {
    const env = environment(r, c, []);
    for (const k of keys) {
      if (help[proc].has(k) && !env.has(k)) problems.push(`${k}: read by ${proc}, not given to Deployment ${w.metadata.name}`);
    }
  }
  for (const k of keys) {
    if (!PROCESSES.some((p) => help[p].has(k))) problems.push(`${k}: no process reads it`);
  }
  report(`[${r.label}] deploy/config/sidecast.env reaches the processes`, problems,
    `${keys.length} keys, each given to every container whose process reads it`);
}

// A variable of type `file` must name a file in a volume mounted from a ConfigMap/Secret key.
function checkFiles(r, help) {
  for (const { w, c, proc } of sidecastContainers(r)) {
    const problems = [];
    const notes = [];
    const env = environment(r, c, []);
    const vols = new Map((r.podSpec(w).volumes || []).map((v) => [v.name, v]));
    for (const [name, h] of help[proc]) {
      if (h.type !== "file" || !env.has(name)) continue;
      const file = env.get(name).value;
      const mount = (c.volumeMounts || []).find((m) => file.startsWith(m.mountPath.replace(/\/?$/, "/")));
      if (!mount) { problems.push(`${name}=${file}: under no volumeMount`); continue; }
      const rel = file.slice(mount.mountPath.replace(/\/?$/, "/").length);
      const vol = vols.get(mount.name);
      const src = vol?.configMap ? ["ConfigMap", vol.configMap] : vol?.secret ? ["Secret", { ...vol.secret, name: vol.secret.secretName }] : null;
      if (!src) { problems.push(`${name}=${file}: volume ${mount.name} is not a ConfigMap or Secret`); continue; }
      const [kind, ref] = src;
      const key = ref.items ? ref.items.find((it) => it.path === rel)?.key : rel;
      const data = r.data(kind, ref.name);
      if (!data) {
        if (r.providedLater(kind, ref.name)) notes.push(`${name} from ${kind} ${ref.name} (an overlay's)`);
        else problems.push(`${name}=${file}: ${kind} ${ref.name} is not in the render`);
      } else if (key === undefined || !(key in data)) {
        problems.push(`${name}=${file}: ${kind} ${ref.name} has no key ${rel}`);
      } else if (name === "GATEWAY_ROUTES") {
        try { JSON.parse(data[key]); } catch (e) { problems.push(`${name}: ${key} is not JSON: ${e.message}`); }
      } else if (name === "JWT_PUBLIC_KEYS" && !/BEGIN PUBLIC KEY|BEGIN CERTIFICATE|"keys"/.test(data[key])) {
        problems.push(`${name}: ${key} holds no PEM public key or JWKS`);
      } else if (name === "JWT_PRIVATE_KEY" && !/BEGIN (EC |RSA )?PRIVATE KEY/.test(data[key])) {
        problems.push(`${name}: ${key} holds no PEM private key`);
      }
      if (mount.subPath) problems.push(`${name}: mounted with subPath, so an update of ${ref.name} never reaches it`);
    }
    const files = [...help[proc].values()].filter((h) => h.type === "file" && env.has(h.name)).map((h) => h.name);
    report(`[${r.label}] files ${w.metadata.name}`, problems, files.length === 0 ? "no file variables set"
      : `${files.join(", ")}: each a key of a mounted ConfigMap/Secret${notes.length ? "; " + notes.join(", ") : ""}`);
  }
}

function checkProbes(r, help) {
  for (const { w, c, proc } of sidecastContainers(r)) {
    const problems = [];
    const conf = effective(help[proc], environment(r, c, []));
    const key = LISTEN_KEY[proc];
    const addr = portOf(conf[key]);
    if (!addr) { report(`[${r.label}] probes ${w.metadata.name}`, [`${key}=${conf[key]}: no port`]); continue; }
    if (/^(127\.|localhost$|::1$)/.test(addr.host)) problems.push(`${key}=${conf[key]}: loopback, the kubelet cannot reach it`);
    for (const [probe, want] of [["readinessProbe", "/readyz"], ["livenessProbe", "/healthz"]]) {
      const g = c[probe]?.httpGet;
      if (!g) { problems.push(`${probe}: no httpGet probe`); continue; }
      if (g.path !== want) problems.push(`${probe}: path ${g.path}, the process serves ${want}`);
      const port = containerPort(c, g.port);
      if (port === null) problems.push(`${probe}: port ${g.port} is no containerPort`);
      else if (port !== addr.port) problems.push(`${probe}: port ${g.port} (${port}), but ${proc} listens on ${addr.port} (${key})`);
    }
    const ann = w.spec.template.metadata?.annotations?.["prometheus.io/port"];
    if (ann && Number(ann) !== addr.port) problems.push(`prometheus.io/port ${ann}, /metrics is on ${addr.port}`);
    report(`[${r.label}] probes ${w.metadata.name}`, problems,
      `/readyz and /healthz on ${addr.port} = ${key} ${conf[key]}`);
  }
}

function checkServices(r) {
  const problems = [];
  const lines = [];
  for (const s of r.all("Service")) {
    const ws = r.workloads().filter((w) => matches(s.spec.selector, r.podLabels(w)));
    if (ws.length === 0) { problems.push(`Service ${s.metadata.name}: its selector matches no workload`); continue; }
    for (const p of s.spec.ports || []) {
      const target = p.targetPort ?? p.port;
      for (const w of ws) {
        const ok = (r.podSpec(w).containers || []).some((c) => containerPort(c, target) !== null);
        if (!ok) problems.push(`Service ${s.metadata.name} port ${p.name || p.port}: targetPort ${target} is no containerPort of ${w.kind} ${w.metadata.name}`);
      }
    }
    lines.push(`${s.metadata.name}->${ws.map((w) => w.metadata.name).join(",")}`);
  }
  for (const ing of r.all("Ingress")) {
    for (const rule of ing.spec.rules || []) {
      for (const p of rule.http?.paths || []) {
        const b = p.backend?.service;
        const s = b && r.find("Service", b.name);
        if (!s) { problems.push(`Ingress ${ing.metadata.name}: backend Service ${b?.name} is not in the render`); continue; }
        const ok = (s.spec.ports || []).some((sp) => (b.port.name !== undefined ? sp.name === b.port.name : sp.port === b.port.number));
        if (!ok) problems.push(`Ingress ${ing.metadata.name}: Service ${b.name} has no port ${b.port.name ?? b.port.number}`);
        lines.push(`${rule.host}${p.path}->${b.name}`);
      }
    }
  }
  report(`[${r.label}] services and ingress backends`, problems, lines.join(" "));
}

function checkShutdown(r, help) {
  for (const { w, c, proc } of sidecastContainers(r)) {
    const problems = [];
    const conf = effective(help[proc], environment(r, c, []));
    const pre = preStopSeconds(c);
    const own = SHUTDOWN_S[proc](conf);
    const grace = w.spec.template.spec.terminationGracePeriodSeconds ?? 30;
    if (!(pre > 0)) problems.push("no preStop sleep: the pod would get SIGTERM while still receiving traffic");
    if (!(grace >= pre + own)) problems.push(`terminationGracePeriodSeconds ${grace} < preStop ${pre} s + ${proc}'s shutdown ${own} s`);
    report(`[${r.label}] shutdown ${w.metadata.name}`, problems,
      `grace ${grace} s >= preStop ${pre} s + shutdown ${own} s`);
  }
}

function checkAutoscaling(r) {
  const problems = [];
  const hpas = r.all("HorizontalPodAutoscaler");
  const edge = r.find("Deployment", "edge");
  if (!hpas.some((h) => h.spec.scaleTargetRef.kind === "Deployment" && h.spec.scaleTargetRef.name === "edge")) {
    problems.push("no HorizontalPodAutoscaler for Deployment edge");
  }
  for (const h of hpas) {
    const t = r.find(h.spec.scaleTargetRef.kind, h.spec.scaleTargetRef.name);
    if (!t) { problems.push(`HPA ${h.metadata.name}: target ${h.spec.scaleTargetRef.kind} ${h.spec.scaleTargetRef.name} not in the render`); continue; }
    if (t.spec.replicas !== undefined) problems.push(`${t.metadata.name}: sets replicas, which every apply would reset under the HPA`);
    if ((h.spec.minReplicas ?? 1) > h.spec.maxReplicas) problems.push(`HPA ${h.metadata.name}: minReplicas > maxReplicas`);
    for (const m of h.spec.metrics || []) {
      if (m.type === "Resource" && m.resource.target.type === "Utilization") {
        for (const c of r.podSpec(t).containers || []) {
          if (!c.resources?.requests?.[m.resource.name]) problems.push(`${t.metadata.name}/${c.name}: no ${m.resource.name} request, so no ${m.resource.name} utilization to scale on`);
        }
      }
    }
    if (!(h.spec.metrics || []).some((m) => m.type === "Resource" && m.resource.name === "cpu")) problems.push(`HPA ${h.metadata.name}: not on CPU`);
  }
  for (const p of r.all("PodDisruptionBudget")) {
    const ws = r.workloads().filter((w) => matches(p.spec.selector?.matchLabels, r.podLabels(w)));
    if (ws.length === 0) problems.push(`PodDisruptionBudget ${p.metadata.name}: selects no workload`);
  }
  if (edge && !r.all("PodDisruptionBudget").some((p) => matches(p.spec.selector?.matchLabels, r.podLabels(edge)))) {
    problems.push("no PodDisruptionBudget for the edge");
  }
  const h = hpas.find((x) => x.spec.scaleTargetRef.name === "edge");
  report(`[${r.label}] edge autoscaling and disruption budget`, problems,
    h ? `HPA ${h.spec.minReplicas}..${h.spec.maxReplicas} on CPU, edge has CPU requests and no fixed replicas; ${r.all("PodDisruptionBudget").map((p) => p.metadata.name).join(", ")} PDBs select pods` : "");
}

// ingress-nginx's TLS passthrough: the controller ends no TLS for the Ingress's host, the
// process behind does.
function passthrough(ing) {
  return ing.metadata?.annotations?.["nginx.ingress.kubernetes.io/ssl-passthrough"] === "true";
}

function ingressFor(r, service) {
  return r.all("Ingress").map((ing) => {
    for (const rule of ing.spec.rules || []) {
      for (const p of rule.http?.paths || []) {
        if (p.backend?.service?.name === service) {
          const tls = passthrough(ing) || (ing.spec.tls || []).some((t) => (t.hosts || []).includes(rule.host));
          return { ing, host: rule.host, path: p.path, tls, port: p.backend.service.port };
        }
      }
    }
    return null;
  }).find(Boolean);
}

function checkPublicUrls(r, help) {
  const problems = [];
  const edgeC = sidecastContainers(r).find((x) => x.proc === "edge");
  const gw = ingressFor(r, "gateway");
  const ed = ingressFor(r, "edge");
  if (!edgeC || !gw || !ed) { report(`[${r.label}] ingress and public URLs`, ["an Ingress for the gateway and one for the edge are needed"]); return; }
  const conf = effective(help.edge, environment(r, edgeC.c, []));
  const a = ed.ing.metadata.annotations || {};
  const silence = (Number(conf.EDGE_PING_INTERVAL_MS) + Number(conf.EDGE_PONG_TIMEOUT_MS)) / 1000;
  for (const k of ["proxy-read-timeout", "proxy-send-timeout"]) {
    const v = Number(a[`nginx.ingress.kubernetes.io/${k}`]);
    if (!(v > silence)) problems.push(`edge Ingress: ${k} ${a[`nginx.ingress.kubernetes.io/${k}`] ?? "(unset, 60)"} s must outlast the edge's ping + pong (${silence} s)`);
  }
  if (ed.path !== "/ws") problems.push(`edge Ingress path ${ed.path}: the edge serves WebSockets on /ws`);
  const wantWs = `${ed.tls ? "wss" : "ws"}://${ed.host}/ws`;
  if (conf.EDGE_PUBLIC_URL !== wantWs) problems.push(`EDGE_PUBLIC_URL ${conf.EDGE_PUBLIC_URL}, the Ingress serves ${wantWs}`);
  const auth = sidecastContainers(r).find((x) => x.proc === "auth");
  if (auth) {
    const ac = effective(help.auth, environment(r, auth.c, []));
    if (ac.EDGE_PUBLIC_URL !== wantWs) problems.push(`auth hands out ws_url ${ac.EDGE_PUBLIC_URL}, the Ingress serves ${wantWs}`);
  }
  const page = `${gw.tls ? "https" : "http"}://${gw.host}`;
  if (!conf.ALLOWED_ORIGINS.split(",").includes(page)) problems.push(`ALLOWED_ORIGINS ${conf.ALLOWED_ORIGINS} lacks ${page}, the origin of the page the gateway serves`);
  report(`[${r.label}] ingress and public URLs`, problems,
    `${page} -> gateway, ${wantWs} -> edge; timeouts ${a["nginx.ingress.kubernetes.io/proxy-read-timeout"]} s > ping+pong ${silence} s; EDGE_PUBLIC_URL and ALLOWED_ORIGINS agree`);
}

// TLS passed through to the processes (k8s/overlays/dev-tls): the Ingress's backend must be the
// process's TLS listener (a TLS connection sent to the plain port fails), with its certificate
// and key set; an Ingress that ends TLS itself must send plain HTTP to the plain port. The
// certificate files themselves are checked by "files".
const TLS_KEYS = { gateway: ["GATEWAY_TLS_LISTEN", "GATEWAY_TLS_CERT", "GATEWAY_TLS_KEY"],
                   edge: ["EDGE_TLS_LISTEN", "EDGE_TLS_CERT", "EDGE_TLS_KEY"] };
function checkTls(r, help) {
  const problems = [];
  const lines = [];
  for (const proc of ["gateway", "edge"]) {
    const sc = sidecastContainers(r).find((x) => x.proc === proc);
    const ing = ingressFor(r, proc);
    if (!sc || !ing) continue;
    const conf = effective(help[proc], environment(r, sc.c, []));
    const [listenKey, certKey, keyKey] = TLS_KEYS[proc];
    const svc = r.find("Service", proc);
    const sp = (svc?.spec.ports || []).find((p) => (ing.port.name !== undefined ? p.name === ing.port.name : p.port === ing.port.number));
    const target = sp ? containerPort(sc.c, sp.targetPort ?? sp.port) : null;
    const tlsPort = portOf(conf[listenKey])?.port;
    const plainPort = portOf(conf[LISTEN_KEY[proc]])?.port;
    if (passthrough(ing.ing)) {
      if (!tlsPort) problems.push(`${proc}: its Ingress passes TLS through, but ${listenKey} is not set`);
      else if (target !== tlsPort) problems.push(`${proc}: its Ingress passes TLS through to port ${target}, but ${listenKey} is ${conf[listenKey]}`);
      for (const k of [certKey, keyKey]) if (!conf[k]) problems.push(`${proc}: ${listenKey} set without ${k}`);
      lines.push(`${ing.host} passed through to ${proc}:${tlsPort}`);
    } else {
      if (target !== plainPort) problems.push(`${proc}: its Ingress sends plain HTTP to port ${target}, not ${LISTEN_KEY[proc]} ${conf[LISTEN_KEY[proc]]}`);
      lines.push(`${ing.host} ${ing.tls ? "TLS ended at the ingress" : "plain"} -> ${proc}:${plainPort}`);
    }
    if (conf[listenKey] && tlsPort === plainPort) problems.push(`${proc}: ${listenKey} and ${LISTEN_KEY[proc]} on the same port`);
  }
  report(`[${r.label}] tls`, problems, lines.join("; "));
}

function checkNats(r, help) {
  const problems = [];
  const notes = [];
  const sts = r.find("StatefulSet", "nats");
  if (!sts) { report(`[${r.label}] nats cluster`, ["no StatefulSet nats"]); return; }
  const c = r.podSpec(sts).containers.find((x) => x.name === "nats");
  const env = environment(r, c, problems);
  // /etc/nats: a ConfigMap, or several projected together (nats.conf and what it includes)
  const vol = (r.podSpec(sts).volumes || []).find((v) => v.configMap || v.projected);
  const maps = vol?.configMap ? [vol.configMap] : (vol?.projected?.sources || []).map((x) => x.configMap).filter(Boolean);
  const files = Object.assign({}, ...maps.map((m) => r.data("ConfigMap", m.name) || {}));
  const conf = files["nats.conf"];
  if (!conf) { report(`[${r.label}] nats cluster`, ["the nats StatefulSet mounts no ConfigMap with nats.conf"]); return; }
  for (const inc of conf.matchAll(/^include\s+\.\/(\S+)/gm)) {
    if (!(inc[1] in files)) problems.push(`nats.conf includes ${inc[1]}, which no ConfigMap mounted beside it holds`);
  }
  const client = Number(/^listen:\s*\S*?:?(\d+)\s*$/m.exec(conf)?.[1]);
  const monitor = Number(/^http_port:\s*(\d+)/m.exec(conf)?.[1]);
  const cluster = Number(/^\s+listen:\s*\S*?:(\d+)\s*$/m.exec(conf.slice(conf.indexOf("cluster {")))?.[1]);
  for (const [name, port] of [["client", client], ["monitor", monitor], ["cluster", cluster]]) {
    if (containerPort(c, name) !== port) problems.push(`containerPort ${name} is ${containerPort(c, name)}, nats.conf says ${port}`);
  }
  const replicas = sts.spec.replicas ?? 1;
  if (replicas < 3) problems.push(`${replicas} NATS nodes: JetStream replicas 3 need 3`);
  const svc = sts.spec.serviceName;
  const want = [...Array(replicas).keys()].map((i) => `nats://nats-${i}.${svc}:${cluster}`);
  const routes = [...conf.matchAll(/nats:\/\/[\w.-]+:\d+/g)].map((m) => m[0]);
  if (want.join() !== routes.join()) problems.push(`cluster routes ${routes.join(",")}, want ${want.join(",")}`);
  for (const { w, c: sc, proc } of sidecastContainers(r)) {
    const e = effective(help[proc], environment(r, sc, []));
    const urls = e.NATS_URL.split(",");
    const wantUrls = [...Array(replicas).keys()].map((i) => `nats://nats-${i}.${svc}:${client}`);
    if (urls.join() !== wantUrls.join()) problems.push(`${w.metadata.name}: NATS_URL ${e.NATS_URL}, want ${wantUrls.join(",")}`);
    if (proc === "edge") {
      if (Number(e.HISTORY_REPLICAS) !== 3) problems.push(`edge: HISTORY_REPLICAS ${e.HISTORY_REPLICAS}, want 3 on a 3-node cluster`);
      if (e.HISTORY_STORAGE !== "file") problems.push(`edge: HISTORY_STORAGE ${e.HISTORY_STORAGE}, want file`);
      const store = bytes(env.get("JS_MAX_FILE_STORE")?.value ?? /max_file_store:\s*(\S+)/.exec(conf)?.[1]);
      const pvc = bytes((sts.spec.volumeClaimTemplates || []).find((v) => v.metadata.name === "data")?.spec.resources.requests.storage);
      // the events stream and the inbox stream, both on the same servers' file store
      const streams = Number(e.HISTORY_MAX_BYTES) + Number(e.HISTORY_INBOX_MAX_BYTES);
      if (!(streams <= store)) problems.push(`HISTORY_MAX_BYTES ${e.HISTORY_MAX_BYTES} + HISTORY_INBOX_MAX_BYTES ${e.HISTORY_INBOX_MAX_BYTES} > JetStream max_file_store ${store}`);
      if (!(store <= pvc)) problems.push(`JetStream max_file_store ${store} > the volume's ${pvc} bytes`);
      notes.push(`streams ${e.HISTORY_MAX_BYTES} + ${e.HISTORY_INBOX_MAX_BYTES} <= file store ${store} <= volume ${pvc} bytes`);
    }
  }
  const ns = process.env.NATS_SERVER || "nats-server";
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sidecast-nats-"));
  try {
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
    const vars = {};
    // a value from a Secret the base leaves to an overlay (the bus passwords): a stand-in
    for (const [k, v] of env) vars[k] = v.value === undefined ? "standin" : v.value.startsWith("<") ? `${sts.metadata.name}-0` : v.value;
    const t = spawnSync(ns, ["-c", path.join(dir, "nats.conf"), "-t"], { env: { ...process.env, ...vars }, encoding: "utf8", timeout: 10000 });
    if (t.error?.code === "ENOENT") notes.push(`${ns} not installed: nats.conf not parsed`);
    else if (t.status !== 0) problems.push(`${ns} -t: ${(t.stderr + t.stdout).trim()}`);
    else notes.push(`nats.conf accepted by ${ns} -t`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  report(`[${r.label}] nats cluster`, problems,
    `${replicas} nodes, routes and every NATS_URL name them on ${cluster}/${client}; HISTORY_REPLICAS=3, HISTORY_STORAGE=file; ${notes.join("; ")}`);
}

function checkRedis(r, help) {
  const problems = [];
  const seen = new Set();
  for (const { w, c, proc } of sidecastContainers(r)) {
    if (!help[proc].has("REDIS_URL")) continue;
    const url = effective(help[proc], environment(r, c, [])).REDIS_URL;
    seen.add(url);
    const m = /^redis:\/\/(?:[^@]*@)?([\w.-]+)(?::(\d+))?(?:\/\d+)?$/.exec(url || "");
    if (!m) { problems.push(`${w.metadata.name}: REDIS_URL ${url}: not redis://host[:port][/db]`); continue; }
    const s = r.find("Service", m[1]);
    if (!s) { problems.push(`${w.metadata.name}: REDIS_URL host ${m[1]} is no Service in the render`); continue; }
    const port = Number(m[2] || 6379);
    if (!(s.spec.ports || []).some((p) => p.port === port)) problems.push(`${w.metadata.name}: Service ${m[1]} has no port ${port}`);
  }
  report(`[${r.label}] redis`, problems, `REDIS_URL ${[...seen].join(" ")} is a Service with that port`);
}

// ---------------------------------------------------------------------------------------------

const renders = process.argv.slice(2).map((a) => {
  const i = a.indexOf("=");
  const label = a.slice(0, i);
  const docs = YAML.parseAllDocuments(fs.readFileSync(a.slice(i + 1), "utf8"));
  for (const d of docs) if (d.errors.length) throw new Error(`${a}: ${d.errors[0].message}`);
  return new Render(label, docs.map((d) => d.toJS()).filter(Boolean));
});
if (renders.length === 0) {
  console.error("usage: node check.mjs LABEL=RENDERED.yaml...");
  process.exit(2);
}

walkDeclarations(MODELS);
walkDeclarations(APIMACHINERY);
const help = {};
for (const p of PROCESSES) {
  try {
    help[p] = helpOf(p);
  } catch (e) {
    report(`build/${p} --help`, [`${e.message.split("\n")[0]} (run make first)`]);
  }
}
if (Object.keys(help).length < PROCESSES.length) {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(1);
}
console.log(`configuration tables: ${PROCESSES.map((p) => `build/${p} --help (${help[p].size} variables)`).join(", ")}`);

for (const r of renders) {
  console.log(`-- ${r.label}: ${r.objects.length} objects`);
  for (const o of r.objects) await schemaCheck(r.label, o);
  checkNamespace(r);
  checkReferences(r);
  checkImages(r);
  checkEnv(r, help);
  checkConfigFile(r, help);
  checkFiles(r, help);
  checkProbes(r, help);
  checkServices(r);
  checkShutdown(r, help);
  checkAutoscaling(r);
  checkPublicUrls(r, help);
  checkTls(r, help);
  checkNats(r, help);
  checkRedis(r, help);
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
