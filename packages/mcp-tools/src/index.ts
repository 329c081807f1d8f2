/**
 * `@shells/mcp-tools`: the Shells MCP tools — their table (descriptions for a model, input schemas
 * generated from the contract, result rendering) and the server factory both MCP doors use: the
 * `shells-mcp` stdio server and the control plane's `/mcp` endpoint. This file is the package's
 * contract; everything else is internal.
 */
export { OUTPUT_LIMIT_CHARS, boundOutput, utf8Bytes } from "./bound-output.js";
export {
  createShellsMcpServer,
  type InvokeTool,
  type ShellsMcpServerOptions,
} from "./shells-mcp-server.js";
export {
  UNEXPECTED_FAILURE,
  renderToolError,
  toToolFailure,
  type ToolFailure,
} from "./tool-errors.js";
export {
  SHELLS_TOOLS,
  renderToolResult,
  toolDefinitions,
  type RenderedResult,
  type ShellsTool,
  type ShellsToolTable,
  type ToolResults,
} from "./tool-table.js";
