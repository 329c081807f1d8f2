/** `@shells/mcp`: the `shells-mcp` stdio MCP server, a thin client of the agent gate. */
export { MCP_SERVER_VERSION, startStdioServer, type StdioServerOptions } from "./stdio-server.js";
