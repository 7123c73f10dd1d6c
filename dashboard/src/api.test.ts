import { afterEach, describe, expect, it, vi } from "vitest";
import { AnswerCache, answers, fetchMe, requestUrl } from "./api";

// What the page sent, and the answers it gets back in turn.
function serve(...replies: (() => Response)[]) {
  const sent: { url: string; headers: Record<string, string> }[] = [];
  vi.stubGlobal("fetch", async (url: string, init: { headers: Record<string, string> }) => {
    sent.push({ url, headers: init.headers });
    const reply = replies.shift();
    if (!reply) throw new Error("no more replies");
    return reply();
  });
  return sent;
}

const json = (body: unknown, etag?: string) => () =>
  new Response(JSON.stringify(body), {
    status: 200,
    headers: { "Content-Type": "application/json", ...(etag ? { ETag: etag } : {}) },
  });
const notModified = () => new Response(null, { status: 304 });

afterEach(() => {
  vi.unstubAllGlobals();
  answers.keep("acme-key-1 analytics/me", null, null);
  answers.keep("globex-key-1 analytics/me", null, null);
});

describe("If-None-Match", () => {
  const acme = { key: "acme-key-1", tenant: null };
  const me = { role: "tenant", tenant_id: "acme" };

  it("sends the last ETag of the same URL and reuses that answer on 304", async () => {
    const sent = serve(
      json(me, '"v1"'),
      notModified,
      json({ ...me, tenant_id: "acme2" }, '"v2"'),
      notModified,
    );
    expect(await fetchMe(acme)).toEqual(me);
    expect(await fetchMe(acme)).toEqual(me);
    expect(await fetchMe(acme)).toEqual({ ...me, tenant_id: "acme2" });
    expect(await fetchMe(acme)).toEqual({ ...me, tenant_id: "acme2" });
    expect(sent.map((s) => s.headers["If-None-Match"])).toEqual([undefined, '"v1"', '"v1"', '"v2"']);
  });

  it("sends nothing without an ETag, and never another key's ETag", async () => {
    const sent = serve(json(me), json(me, '"v1"'), json(me));
    await fetchMe(acme);
    await fetchMe(acme);
    await fetchMe({ key: "globex-key-1", tenant: null });
    expect(sent.map((s) => s.headers["If-None-Match"])).toEqual([undefined, undefined, undefined]);
  });

  it("keeps a bounded number of answers, the least recently used leaving first", () => {
    const cache = new AnswerCache(2);
    cache.keep("a", '"1"', 1);
    cache.keep("b", '"2"', 2);
    cache.lookup("a");
    cache.keep("c", '"3"', 3);
    expect([cache.lookup("a")?.body, cache.lookup("b"), cache.lookup("c")?.body]).toEqual([1, undefined, 3]);
  });
});

describe("requestUrl", () => {
  it("fills path parameters, leaves out empty values and adds the tenant", () => {
    expect(
      requestUrl(
        "/analytics/campaign/{campaign_id}",
        { from: "a", to: "b", window: 60, order: "" },
        { campaign_id: "c&1/x" },
        "acme",
      ),
    ).toBe("analytics/campaign/c%261%2Fx?from=a&to=b&window=60&tenant=acme");
  });
});
