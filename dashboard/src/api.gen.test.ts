import openapiTS, { astToString, COMMENT_HEADER } from "openapi-typescript";
import { expect, it } from "vitest";
import document from "../openapi.json?raw";
import generated from "./api.gen.ts?raw";

// api.gen.ts is openapi-typescript's rendering of openapi.json, the document the API
// serves (tests/api/test_dashboard_types.py checks that half): regenerate and compare.
it("api.gen.ts is what openapi-typescript makes of openapi.json", async () => {
  const regenerated = COMMENT_HEADER + astToString(await openapiTS(JSON.parse(document)));
  expect(regenerated, "run `.venv/bin/python dashboard/api_types.py`").toBe(generated);
});
