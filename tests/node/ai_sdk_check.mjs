// The AI SDK (`ai` with @ai-sdk/openai, @ai-sdk/anthropic and @ai-sdk/openai-compatible) against a running
// gateway, with each provider's default settings: generateText with a tool loop, streamText, and structured
// output. Run by tests/test_node_sdk.py with the gateway's URL and a model; prints one JSON line of results.
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [base, model] = process.argv.slice(2);
const key = process.env.KIMI_GATEWAY_KEY || "unused";
const providers = {
  // openai(model) speaks the Responses API by default; .chat() chat completions.
  "openai-responses": createOpenAI({ baseURL: `${base}/v1`, apiKey: key })(model),
  "openai-chat": createOpenAI({ baseURL: `${base}/v1`, apiKey: key }).chat(model),
  anthropic: createAnthropic({ baseURL: `${base}/v1`, apiKey: key })(model),
  "openai-compatible": createOpenAICompatible({ name: "kimi", baseURL: `${base}/v1`, apiKey: key })(model),
};

const asked = [];
const weather = tool({
  description: "The weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => {
    asked.push(city);
    return { city, sky: "sunny", celsius: 21 };
  },
});

const results = {};
for (const [name, llm] of Object.entries(providers)) {
  const got = {};
  const loop = await generateText({
    model: llm,
    prompt: "What is the weather in Paris?",
    tools: { weather },
    stopWhen: stepCountIs(4),
  });
  got.tools = { text: loop.text, steps: loop.steps.length, calls: asked.splice(0) };
  const stream = streamText({ model: llm, prompt: "Say hello." });
  let text = "";
  for await (const piece of stream.textStream) text += piece;
  got.stream = text;
  const shaped = await generateObject({
    model: llm,
    schema: z.object({ city: z.string(), celsius: z.number() }),
    prompt: "The weather in Paris, as JSON.",
  });
  got.object = shaped.object;
  results[name] = got;
}
console.log(JSON.stringify(results));
