// trigger.dev's v2 client calls, made once each with the real Node SDK against kongflow:
// `node client.mjs sendEvent '<event>' ['<options>']`, `sendEvents '<events>'`, `cancelEvent <id>`,
// `invokeJob <job id> '<payload>'`, `getRun <id>`, `cancelRun <id>`, `getRunStatuses <id>`.
// Prints the SDK's result as JSON (or its error, exit 1). Environment as endpoint.mjs.
import { TriggerClient } from "@trigger.dev/sdk";

const client = new TriggerClient({
  id: process.env.ENDPOINT_ID,
  apiKey: process.env.TRIGGER_API_KEY,
  apiUrl: process.env.TRIGGER_API_URL,
});

const [action, ...args] = process.argv.slice(2);
try {
  let result;
  if (action === "sendEvent") result = await client.sendEvent(JSON.parse(args[0]), JSON.parse(args[1] ?? "{}"));
  else if (action === "sendEvents") result = await client.sendEvents(JSON.parse(args[0]));
  else if (action === "cancelEvent") result = await client.cancelEvent(args[0]);
  else if (action === "invokeJob") result = await client.invokeJob(args[0], JSON.parse(args[1]));
  else if (action === "getRun") result = await client.getRun(args[0]);
  else if (action === "getRuns") result = await client.getRuns(args[0], JSON.parse(args[1] ?? "{}"));
  else if (action === "cancelRun") result = await client.cancelRun(args[0]);
  else if (action === "getRunStatuses") result = await client.getRunStatuses(args[0]);
  else throw new Error(`unknown action ${action}`);
  console.log(JSON.stringify(result));
} catch (error) {
  console.error(String(error?.stack ?? error));
  process.exit(1);
}
