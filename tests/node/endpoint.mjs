// A trigger.dev v2 endpoint built with the real Node SDK, served on 127.0.0.1 (port printed as
// JSON on the first line), for kongflow's protocol tests. Environment: ENDPOINT_ID,
// TRIGGER_API_KEY, TRIGGER_API_URL.
import http from "node:http";
import { TriggerClient, eventTrigger, intervalTrigger, invokeTrigger } from "@trigger.dev/sdk";
import { z } from "zod";

// What each run really did, for the tests to read at GET /calls: how many times each step's
// body ran, and the run notifications the hooks received.
const calls = {};
function called(runId, what) {
  calls[runId] ??= {};
  calls[runId][what] = (calls[runId][what] ?? 0) + 1;
}

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

// Three steps; the second fails on its first attempt and is retried.
client.defineJob({
  id: "node-steps",
  name: "Node steps",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.steps" }),
  run: async (payload, io, ctx) => {
    const retry = { limit: 3, minTimeoutInMs: 200, factor: 1, randomize: false };
    const one = await io.runTask("step-1", async () => {
      called(ctx.run.id, "step-1");
      return { one: 1 };
    });
    await io.logger.info("between steps", { one });
    const two = await io.runTask(
      "step-2",
      async (task) => {
        called(ctx.run.id, "step-2");
        if (task.attempts === 1) throw new Error("the first attempt fails");
        return { two: 2, attempts: task.attempts };
      },
      { retry },
    );
    const three = await io.runTask("step-3", async () => {
      called(ctx.run.id, "step-3");
      return { three: 3 };
    });
    return { ...one, ...two, ...three };
  },
});

// A step, a wait, a step; its hooks record the notifications they get.
client.defineJob({
  id: "node-wait",
  name: "Node wait",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.wait" }),
  run: async (payload, io, ctx) => {
    const before = await io.runTask("before", async () => {
      called(ctx.run.id, "before");
      return Date.now();
    });
    await io.wait("pause", payload.seconds ?? 2);
    const after = await io.runTask("after", async () => {
      called(ctx.run.id, "after");
      return Date.now();
    });
    return { waitedMs: after - before };
  },
  onSuccess: async (notification) => called(notification.id, "onSuccess"),
  onFailure: async (notification) => called(notification.id, "onFailure"),
});

// Statuses, the key-value store and an event sent from inside a run.
client.defineJob({
  id: "node-io",
  name: "Node io",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.io" }),
  run: async (payload, io) => {
    const status = await io.createStatus("progress", {
      label: "Working",
      state: "loading",
      data: { done: 0 },
    });
    await io.store.run.set("remember", "colour", { colour: "green" });
    const remembered = await io.store.run.get("recall", "colour");
    await io.store.env.set("env-set", "shared", 42);
    const sent = await io.sendEvent("send", { name: "node.echo", payload: { from: "io" } });
    await status.update("progress-done", { state: "success", data: { done: 1 } });
    return { remembered, sent: sent.name };
  },
});

client.defineJob({
  id: "node-typed",
  name: "Node typed",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.typed", schema: z.object({ n: z.number() }) }),
  run: async (payload) => ({ doubled: payload.n * 2 }),
});

client.defineJob({
  id: "node-filtered",
  name: "Node filtered",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.plan", filter: { plan: ["pro"] } }),
  run: async (payload) => ({ plan: payload.plan }),
});

// A step, a wait, then a slow step (a worker is killed while it runs) and a last one.
client.defineJob({
  id: "node-resumed",
  name: "Node resumed",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.resumed" }),
  run: async (payload, io, ctx) => {
    await io.runTask("first", async () => called(ctx.run.id, "first"));
    await io.wait("pause", 1);
    await io.runTask("slow", async () => {
      called(ctx.run.id, "slow");
      await new Promise((resolve) => setTimeout(resolve, payload.slowMs ?? 0));
    });
    await io.runTask("last", async () => called(ctx.run.id, "last"));
    return { done: true };
  },
});

// A request kongflow makes for the run (io.backgroundFetch), however long it takes.
client.defineJob({
  id: "node-fetch",
  name: "Node fetch",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.fetch" }),
  run: async (payload, io) => {
    const body = await io.backgroundFetch("fetch", payload.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ q: 1 }),
    });
    return { body };
  },
});

// Two children in parallel; the second fails on its first attempt and is retried.
client.defineJob({
  id: "node-parallel",
  name: "Node parallel",
  version: "1.0.0",
  trigger: eventTrigger({ name: "node.parallel" }),
  run: async (payload, io, ctx) => {
    const retry = { limit: 3, minTimeoutInMs: 200, factor: 1, randomize: false };
    const results = await io.parallel("both", [1, 2], async (n) =>
      io.runTask(
        `child-${n}`,
        async (task) => {
          called(ctx.run.id, `child-${n}`);
          if (n === 2 && task.attempts === 1) throw new Error("the first attempt fails");
          return n * 10;
        },
        { retry },
      ),
    );
    return { results };
  },
});

// Only when INTERVAL_SECONDS is set: a scheduled job would fire through every other test.
if (process.env.INTERVAL_SECONDS) {
  client.defineJob({
    id: "node-interval",
    name: "Node interval",
    version: "1.0.0",
    trigger: intervalTrigger({ seconds: Number(process.env.INTERVAL_SECONDS) }),
    run: async (payload) => ({ ts: payload.ts }),
  });
}

const server = http.createServer(async (req, res) => {
  if (req.method === "GET" && req.url === "/calls") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(calls));
    return;
  }
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
