// A trigger.dev v2 endpoint built with the real Node SDK, served on 127.0.0.1 (port printed as
// JSON on the first line), for kongflow's protocol tests. Environment: ENDPOINT_ID,
// TRIGGER_API_KEY, TRIGGER_API_URL.
import http from "node:http";
import { TriggerClient, eventTrigger, invokeTrigger } from "@trigger.dev/sdk";

const client = new TriggerClient({
  id: process.env.ENDPOINT_ID,
  apiKey: process.env.TRIGGER_API_KEY,
  apiUrl: process.env.TRIGGER_API_URL,
});

client.defineJob({
  id: "node-echo",
  name: "Node echo",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.echo" }),
  run: async (payload) => ({ echo: payload }),
});

client.defineJob({
  id: "node-invoked",
  name: "Node invoked",
  version: "1.0.0",
  trigger: invokeTrigger(),
  run: async (payload) => ({ invoked: payload }),
});

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (typeof value === "string") headers.set(name, value);
  }
  const hasBody = !["GET", "HEAD"].includes(req.method);
  const request = new Request(`http://127.0.0.1${req.url}`, {
    method: req.method,
    headers,
    body: hasBody ? Buffer.concat(chunks) : undefined,
  });
  const response = await client.handleRequest(request);
  res.writeHead(response.status, { "content-type": "application/json", ...(response.headers ?? {}) });
  res.end(JSON.stringify(response.body ?? null));
});

server.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
