import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The build lands in api/static/ and is committed, so that `pip install` needs no Node.
// `base: "./"` keeps every asset URL relative: the API serves the page at `/` and the
// files under it, and nothing in the bundle assumes a mount point.
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: {
    outDir: "../api/static",
    emptyOutDir: true,
    // Recharts alone is ~100 kB gzipped; one chunk is fine for a local dashboard.
    chunkSizeWarningLimit: 1000,
  },
  server: {
    // `npm run dev` against a running `pulse api` on the default port.
    proxy: { "/analytics": "http://127.0.0.1:8000" },
  },
});
