// The official openai Node SDK against a running gateway: chat, streaming, tools, json_schema, files,
// errors, and the Responses API. Prints one JSON object: {check: detail}; a failed check throws.
// Usage: node sdk_check.mjs <base_url> <model>
import OpenAI, { toFile } from "openai";
import assert from "node:assert/strict";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 120_000 });
const results = {};

async function check(name, fn) {
  results[name] = await fn();
}

await check("chat", async () => {
  const reply = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "What is the capital of France?" }],
    max_tokens: 16,
    temperature: 0,
  });
  assert.ok(reply.id.startsWith("chatcmpl-"));
  assert.ok(reply.choices[0].message.content.length > 0);
  assert.ok(reply.usage.prompt_tokens > 0 && reply.usage.completion_tokens > 0);
  return reply.choices[0].message.content;
});

await check("stream", async () => {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Say hello." }],
    max_tokens: 12,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(text.length > 0);
  assert.ok(usage && usage.completion_tokens > 0);
  return text;
});

await check("tools", async () => {
  const reply = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    tools: [
      {
        type: "function",
        function: {
          name: "get_weather",
          parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        },
      },
    ],
    tool_choice: "required",
    max_tokens: 60,
  });
  const call = reply.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  const args = JSON.parse(call.function.arguments);
  assert.equal(typeof args.city, "string");
  assert.equal(reply.choices[0].finish_reason, "tool_calls");
  return args;
});

await check("json_schema", async () => {
  const reply = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Give me a city and its country." }],
    response_format: {
      type: "json_schema",
      json_schema: {
        name: "place",
        strict: true,
        schema: {
          type: "object",
          properties: { city: { type: "string" }, country: { type: "string" } },
          required: ["city", "country"],
          additionalProperties: false,
        },
      },
    },
    // Greedy, so a long string cannot run into the token limit on an unlucky draw.
    temperature: 0,
    max_tokens: 120,
  });
  assert.equal(reply.choices[0].finish_reason, "stop");
  const parsed = JSON.parse(reply.choices[0].message.content);
  assert.deepEqual(Object.keys(parsed).sort(), ["city", "country"]);
  return parsed;
});

await check("files", async () => {
  const file = await client.files.create({
    file: await toFile(Buffer.from("The meeting is on Tuesday at 10am."), "notes.txt"),
    purpose: "file-extract",
  });
  assert.ok(file.id);
  const listed = await client.files.list();
  assert.ok(listed.data.some((f) => f.id === file.id));
  const content = await (await client.files.content(file.id)).text();
  assert.ok(content.includes("Tuesday"));
  const reply = await client.chat.completions.create({
    model,
    messages: [
      {
        role: "user",
        content: [
          { type: "file", file: { file_id: file.id } },
          { type: "text", text: "When is the meeting?" },
        ],
      },
    ],
    max_tokens: 16,
  });
  assert.ok(reply.usage.prompt_tokens > 10);
  const deleted = await client.files.delete(file.id);
  assert.equal(deleted.deleted, true);
  return file.id;
});

await check("errors", async () => {
  try {
    await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "Hi" }] });
    assert.fail("no error");
  } catch (err) {
    assert.ok(err instanceof OpenAI.NotFoundError, String(err));
    assert.equal(err.status, 404);
    assert.equal(err.code, "model_not_found");
  }
  try {
    await client.chat.completions.create({ model, messages: [] });
    assert.fail("no error");
  } catch (err) {
    assert.ok(err instanceof OpenAI.BadRequestError, String(err));
    assert.equal(err.param, "messages");
  }
  return "typed";
});

await check("responses", async () => {
  const response = await client.responses.create({ model, input: "Say hello.", max_output_tokens: 12 });
  assert.ok(response.id.startsWith("resp_"));
  assert.ok(response.output_text.length > 0);
  const followup = await client.responses.create({
    model,
    input: "Again.",
    previous_response_id: response.id,
    max_output_tokens: 8,
  });
  assert.equal(followup.previous_response_id, response.id);
  const stream = client.responses.stream({ model, input: "Say hi.", max_output_tokens: 200 });
  let text = "";
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") text += event.delta;
  }
  const final = await stream.finalResponse();
  assert.equal(final.output_text, text);
  return response.output_text;
});

console.log(JSON.stringify(results));
