// Drive the visioncreator tool server with the official TypeScript MCP SDK client.
//
//   node ts_client.mjs stdio <command> [args...]   spawn the server over stdio
//   node ts_client.mjs http <url> [token]          connect over streamable HTTP
//
// Lists the tools (titles, annotations, schemas), makes a 256x256 image (with its resource link),
// reads image://{handle} back, inspects it, sends an argument the tool does not take, lists the
// resources, and prints one JSON line of what it saw on stdout; tests/interop/test_interop.py
// asserts on that line.
// Any failure exits non-zero with the reason on stderr.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { readFileSync } from "node:fs";

// The whole run must end well inside the pytest-side limit, so a hang reports here first.
const RUN_TIMEOUT_MS = 25_000;
const REQUEST_TIMEOUT_MS = 15_000;
const PROMPT = "three red apples on a white table";

const timer = setTimeout(() => {
  console.error(`ts_client: no result after ${RUN_TIMEOUT_MS} ms`);
  process.exit(3);
}, RUN_TIMEOUT_MS);

function makeTransport(argv) {
  const [mode, target, ...rest] = argv;
  if (mode === "stdio" && target) {
    // stderr is inherited so the server's log reaches the test's captured output; so is the whole
    // environment (the SDK passes only a few variables by default), so the server runs the code
    // under test (PYTHONPATH) rather than whatever is installed.
    return new StdioClientTransport({ command: target, args: rest, env: { ...process.env }, stderr: "inherit" });
  }
  if (mode === "http" && target) {
    const headers = rest[0] ? { Authorization: `Bearer ${rest[0]}` } : {};
    return new StreamableHTTPClientTransport(new URL(target), { requestInit: { headers } });
  }
  throw new Error("usage: ts_client.mjs stdio <command> [args...] | http <url> [token]");
}

// The PNG header: 8-byte signature, then the IHDR chunk (length, "IHDR", width, height).
function pngSize(bytes) {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (bytes.length < 24 || !bytes.subarray(0, 8).equals(signature)) throw new Error("not a PNG");
  if (bytes.toString("latin1", 12, 16) !== "IHDR") throw new Error("PNG without IHDR first");
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

async function main() {
  const transport = makeTransport(process.argv.slice(2));
  // The SDK tells the transport the negotiated version (HTTP sends it as a header); record it.
  let protocolVersion = null;
  const setVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (version) => {
    protocolVersion = version;
    setVersion?.(version);
  };
  const sdk = JSON.parse(
    readFileSync(new URL("./node_modules/@modelcontextprotocol/sdk/package.json", import.meta.url), "utf8"),
  );
  const client = new Client({ name: "visioncreator-interop-ts", version: "0.1.0" });
  const options = { timeout: REQUEST_TIMEOUT_MS };
  await client.connect(transport, options);
  try {
    const { tools } = await client.listTools({}, options);
    // callTool validates structuredContent against each tool's outputSchema with ajv.
    const made = await client.callTool(
      { name: "text_to_image", arguments: { prompt: PROMPT, width: 256, height: 256, seed: 1 } },
      undefined,
      options,
    );
    if (made.isError) throw new Error(`text_to_image failed: ${JSON.stringify(made.content)}`);
    const handle = made.structuredContent.handle;
    const read = await client.readResource({ uri: `image://${handle}` }, options);
    const resource = read.contents[0];
    const png = Buffer.from(resource.blob, "base64");
    const inspected = await client.callTool(
      { name: "inspect_image", arguments: { image: handle, questions: ["how many apples?"] } },
      undefined,
      options,
    );
    if (inspected.isError) throw new Error(`inspect_image failed: ${JSON.stringify(inspected.content)}`);
    // An argument the tool does not take ("sed" for "seed") must come back as a tool error naming it.
    const refused = await client.callTool(
      { name: "text_to_image", arguments: { prompt: PROMPT, sed: 1, color: "red" } },
      undefined,
      options,
    );
    const listed = await client.listResources({}, options);
    const line = {
      client: "@modelcontextprotocol/sdk",
      client_version: sdk.version,
      protocol_version: protocolVersion,
      server: client.getServerVersion()?.name,
      server_version: client.getServerVersion()?.version,
      prompts_advertised: Boolean(client.getServerCapabilities()?.prompts),
      tools: tools.map((tool) => tool.name),
      titles: Object.fromEntries(tools.map((tool) => [tool.name, tool.title ?? null])),
      annotations: Object.fromEntries(tools.map((tool) => [tool.name, tool.annotations ?? null])),
      closed_schemas: tools.filter((tool) => tool.inputSchema.additionalProperties === false).map((tool) => tool.name),
      output_schemas: tools.filter((tool) => tool.outputSchema).map((tool) => tool.name),
      made: made.structuredContent,
      made_links: made.content
        .filter((block) => block.type === "resource_link")
        .map((block) => ({ uri: block.uri, name: block.name, mime_type: block.mimeType })),
      refused: {
        is_error: Boolean(refused.isError),
        text: refused.content.filter((block) => block.type === "text").map((block) => block.text).join(" "),
      },
      listed: listed.resources.map((resource) => resource.uri),
      resource: { uri: resource.uri, mime_type: resource.mimeType, bytes: png.length, ...pngSize(png) },
      inspected: inspected.structuredContent,
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
  } finally {
    await client.close();
  }
}

main().then(
  () => {
    clearTimeout(timer);
  },
  (error) => {
    console.error(`ts_client: ${error?.stack ?? error}`);
    process.exit(1);
  },
);
