import assert from "node:assert/strict";
import { test } from "node:test";
import { parseSse } from "../src/client.js";

function body(chunks) {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
      controller.close();
    },
  });
}

test("events split across chunks, comments and CRLF are parsed", async () => {
  const events = [];
  const stream = body([": keep-alive\n\nevent: mess", "age\nid: 7\ndata: {\"id\":7}\n\n", "id: 8\r\ndata: a\r\ndata: b\r\n\r\n"]);
  for await (const event of parseSse(stream)) events.push(event);
  assert.deepEqual(events, [
    { event: "message", id: "7", data: '{"id":7}' },
    { event: "message", id: "8", data: "a\nb" },
  ]);
});
