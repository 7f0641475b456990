// A Summit plugin in plain Node.js (no SDK): it serves summit.plugin/v1 on the address the
// orchestrator gives in SUMMIT_PLUGIN_LISTEN (a unix socket under the Docker backend).
"use strict";
const fs = require("fs");
const http = require("http");

const manifest = JSON.parse(fs.readFileSync(process.env.SUMMIT_PLUGIN_MANIFEST || "/summit/plugin.json"));
const listen = process.env.SUMMIT_PLUGIN_LISTEN || "tcp://0.0.0.0:8080";
let config = {};

function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

function error(res, status, code, message) {
  send(res, status, { error: { code, message } });
}

const handlers = {
  "analyzer/echo": (input) => ({ echo: input, runtime: `node ${process.version}` }),
};

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body = {};
    if (chunks.length) {
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch (e) {
        return error(res, 400, "bad_request", "the body is not JSON");
      }
    }
    const url = req.url || "";
    if (req.method === "GET" && url === "/summit/v1/health") {
      return send(res, 200, {
        status: "ok",
        protocol: "summit.plugin/v1",
        plugin: { id: manifest.id, version: manifest.version },
        extensions: manifest.extensions.map((e) => ({ point: e.point, name: e.name })),
      });
    }
    if (req.method !== "POST") return error(res, 405, "method_not_allowed", `${req.method} ${url}`);
    if (url === "/summit/v1/initialize") {
      config = (body && body.config) || {};
      return send(res, 200, { status: "ok" });
    }
    if (url === "/summit/v1/events") return send(res, 200, { status: "ok" });
    if (url === "/summit/v1/shutdown") {
      send(res, 200, { status: "ok" });
      server.close();
      setTimeout(() => process.exit(0), 50);
      return;
    }
    const m = url.match(/^\/summit\/v1\/extensions\/([a-z_]+)\/([a-z0-9_-]+)$/);
    if (m) {
      const handler = handlers[`${m[1]}/${m[2]}`];
      if (!handler) return error(res, 404, "unknown_extension", `no extension ${m[1]}/${m[2]}`);
      if (typeof body !== "object" || body === null || !("input" in body)) {
        return error(res, 400, "bad_request", "the body needs 'input'");
      }
      try {
        return send(res, 200, { output: handler(body.input, config) });
      } catch (e) {
        console.error(e);
        return error(res, 500, "handler_error", String(e && e.message));
      }
    }
    return error(res, 404, "not_found", url);
  });
});

if (listen.startsWith("unix://")) {
  const path = listen.slice("unix://".length);
  try { fs.unlinkSync(path); } catch (e) { /* not there */ }
  server.listen(path, () => fs.chmodSync(path, 0o666));
} else {
  const [host, port] = listen.slice("tcp://".length).split(":");
  server.listen(Number(port), host);
}
process.on("SIGTERM", () => server.close(() => process.exit(0)));
console.error(`node-echo serving ${manifest.id} ${manifest.version} on ${listen}`);
