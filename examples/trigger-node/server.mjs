// A trigger.dev v2 endpoint, written with trigger.dev's own Node SDK, that kongflow runs: the
// same code as against trigger.dev's server, pointed at kongflow's API.
//
//   TRIGGER_API_URL=http://127.0.0.1:8030 TRIGGER_API_KEY=<key from kongflow dev> node server.mjs
//
// PORT (default 3000) is where the endpoint listens, on 127.0.0.1.
import http from "node:http";
import { TriggerClient, eventTrigger } from "@trigger.dev/sdk";
import { z } from "zod";

const client = new TriggerClient({
  id: process.env.ENDPOINT_ID ?? "shop",
  apiKey: process.env.TRIGGER_API_KEY,
  apiUrl: process.env.TRIGGER_API_URL,
});

// Charge an order once, whatever happens to the endpoint: each io task's output is stored by
// kongflow, so a run executed again (after the wait, a retry or a restart) skips what is done.
client.defineJob({
  id: "charge-order",
  name: "Charge an order",
  version: "1.0.0",
  trigger: eventTrigger({
    name: "order.placed",
    schema: z.object({ orderId: z.number(), total: z.number() }),
  }),
  run: async (payload, io) => {
    const charge = await io.runTask(
      "charge-card",
      async () => ({ chargeId: `ch_${payload.orderId}`, amount: payload.total }),
      { retry: { limit: 3, minTimeoutInMs: 500, factor: 2 } },
    );
    await io.logger.info("charged", charge);
    await io.wait("settle", 1); // the run is resumed by kongflow a second later
    return { orderId: payload.orderId, ...charge };
  },
});

// The SDK answers plain Request objects: adapt node's http server to it.
const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (typeof value === "string") headers.set(name, value);
  }
  const request = new Request(`http://127.0.0.1${req.url}`, {
    method: req.method,
    headers,
    body: ["GET", "HEAD"].includes(req.method) ? undefined : Buffer.concat(chunks),
  });
  const response = await client.handleRequest(request);
  res.writeHead(response.status, { "content-type": "application/json", ...(response.headers ?? {}) });
  res.end(JSON.stringify(response.body ?? null));
});

server.listen(Number(process.env.PORT ?? 3000), "127.0.0.1", () => {
  console.log(`endpoint listening on http://127.0.0.1:${server.address().port}`);
});
