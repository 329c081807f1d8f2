import tailwindcss from "@tailwindcss/vite";
import react from "@vitejs/plugin-react";
import { defaultClientConditions, defineConfig } from "vite";

// The SDK and the contract resolve to their TypeScript sources (the workspace's `source` export
// condition), so the console builds without a prior `tsc -b` and `vite` dev reloads SDK edits.
// `npm run dev -w @shells/console` proxies the API to a control plane on :8080.
export default defineConfig({
  plugins: [react(), tailwindcss()],
  resolve: { conditions: ["source", ...defaultClientConditions] },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: true,
    chunkSizeWarningLimit: 1500,
    rolldownOptions: {
      // The SDK loads the contract lazily for Node callers; the console imports it for validation,
      // so it is in the main chunk anyway and the notice is noise.
      onLog(level, log, handler) {
        if (log.code === "INEFFECTIVE_DYNAMIC_IMPORT") return;
        handler(level, log);
      },
    },
  },
  server: {
    proxy: {
      "/api": { target: "http://127.0.0.1:8080", ws: true },
      "/auth": "http://127.0.0.1:8080",
    },
  },
});
