// Code a developer copies: a model page's samples, and the playground's "copy as curl / Python" of the
// exact request it sent. The key is never written into them: they read it from the environment.

const KEY_VAR = "KIMI_GATEWAY_API_KEY";

export function samples(base, model, vision) {
  const python = vision
    ? `import base64
import os

from openai import OpenAI

client = OpenAI(base_url="${base}", api_key=os.environ["${KEY_VAR}"])

with open("receipt.png", "rb") as f:
    image = "data:image/png;base64," + base64.b64encode(f.read()).decode()

completion = client.chat.completions.create(
    model="${model}",
    messages=[{
        "role": "user",
        "content": [
            {"type": "text", "text": "What is the total on this receipt?"},
            {"type": "image_url", "image_url": {"url": image}},
        ],
    }],
    # Optional: name your app on this gateway's model pages.
    extra_headers={"HTTP-Referer": "https://myapp.example", "X-Title": "My App"},
)
print(completion.choices[0].message.content)`
    : `import os

from openai import OpenAI

client = OpenAI(base_url="${base}", api_key=os.environ["${KEY_VAR}"])

completion = client.chat.completions.create(
    model="${model}",
    messages=[{"role": "user", "content": "What is the meaning of life?"}],
    # Optional: name your app on this gateway's model pages.
    extra_headers={"HTTP-Referer": "https://myapp.example", "X-Title": "My App"},
)
print(completion.choices[0].message.content)`;

  const typescript = [
    'import OpenAI from "openai";',
    vision ? 'import { readFileSync } from "node:fs";' : null,
    "",
    `const client = new OpenAI({ baseURL: "${base}", apiKey: process.env.${KEY_VAR} });`,
    vision ? '\nconst image = "data:image/png;base64," + readFileSync("receipt.png").toString("base64");' : null,
    "",
    "const completion = await client.chat.completions.create(",
    "  {",
    `    model: "${model}",`,
    vision
      ? [
          "    messages: [{",
          '      role: "user",',
          "      content: [",
          '        { type: "text", text: "What is the total on this receipt?" },',
          '        { type: "image_url", image_url: { url: image } },',
          "      ],",
          "    }],",
        ].join("\n")
      : '    messages: [{ role: "user", content: "What is the meaning of life?" }],',
    "  },",
    "  // Optional: name your app on this gateway's model pages.",
    '  { headers: { "HTTP-Referer": "https://myapp.example", "X-Title": "My App" } },',
    ");",
    "console.log(completion.choices[0].message.content);",
  ]
    .filter((line) => line !== null)
    .join("\n");

  const content = vision
    ? `[{"type": "text", "text": "What is the total on this receipt?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,'"$IMAGE"'"}}]`
    : '"What is the meaning of life?"';
  const curl = [
    vision ? 'IMAGE=$(base64 -w0 receipt.png)\n' : "",
    `curl ${base}/chat/completions \\`,
    `  -H "Authorization: Bearer $${KEY_VAR}" \\`,
    '  -H "Content-Type: application/json" \\',
    '  -H "HTTP-Referer: https://myapp.example" -H "X-Title: My App" \\',
    `  -d '{"model": "${model}", "messages": [{"role": "user", "content": ${content}}]}'`,
  ].join("\n");
  return { python, typescript, curl };
}

export function asCurl(base, body) {
  const json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
  return [
    `curl ${base}/chat/completions${body.stream ? " -N" : ""} \\`,
    `  -H "Authorization: Bearer $${KEY_VAR}" \\`,
    '  -H "Content-Type: application/json" \\',
    `  -d '${json}'`,
  ].join("\n");
}

// JSON values written as Python literals (True, False, None; strings stay JSON-escaped, which Python reads).
export function pythonLiteral(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  const inner = indent + "    ";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return "[\n" + value.map((v) => inner + pythonLiteral(v, inner)).join(",\n") + ",\n" + indent + "]";
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return (
    "{\n" +
    entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pythonLiteral(v, inner)}`).join(",\n") +
    ",\n" +
    indent +
    "}"
  );
}

// The SDK's own keyword arguments; anything else the page sent travels in extra_body.
const SDK_ARGUMENTS = new Set(["model", "messages", "temperature", "max_tokens", "stream", "stream_options", "top_p"]);

export function asPython(base, body) {
  const lines = [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${base}", api_key=os.environ["${KEY_VAR}"])`,
    "",
    `${body.stream ? "stream" : "completion"} = client.chat.completions.create(`,
  ];
  const extra = {};
  for (const [name, value] of Object.entries(body)) {
    if (SDK_ARGUMENTS.has(name)) lines.push(`    ${name}=${pythonLiteral(value, "    ")},`);
    else extra[name] = value;
  }
  if (Object.keys(extra).length) lines.push(`    extra_body=${pythonLiteral(extra, "    ")},`);
  lines.push(")");
  if (body.stream) {
    lines.push(
      "for chunk in stream:",
      "    if chunk.choices and chunk.choices[0].delta.content:",
      '        print(chunk.choices[0].delta.content, end="", flush=True)',
    );
  } else {
    lines.push("print(completion.choices[0].message.content)");
  }
  return lines.join("\n");
}
