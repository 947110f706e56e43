// What every browser test file shares: the local server and headless Chromium (started before
// the file's tests, closed after), opening the lab page with query parameters, and waiting for
// its status line to settle.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "./chromium.mjs";
import { serve } from "./server.mjs";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
/// Screenshots go here.
export const SHOTS = join(ROOT, "target-browser");

/// Register the file's before/after hooks; the returned object gets `http` and `browser`.
export function useBrowser() {
  const ctx = {};
  before(async () => {
    assert.ok(existsSync(join(ROOT, "www/pkg/tunelab_bg.wasm")), "build the wasm bundle first: scripts/build-web.sh");
    mkdirSync(SHOTS, { recursive: true });
    ctx.http = await serve(ROOT);
    ctx.browser = await launch();
  });
  after(async () => {
    await ctx.browser?.close();
    ctx.http?.server.closeAllConnections();
    ctx.http?.server.close();
  });
  /// A fresh page (its own browser context, so its own cache) on the lab with `query`, on a
  /// screen of `viewport` CSS pixels.
  ctx.open = async (query, viewport = { width: 1366, height: 900 }) => {
    const page = await ctx.browser.newPage({ viewport });
    const console = [];
    page.on("console", (m) => console.push(`${m.type()}: ${m.text()}`));
    await page.goto(`${ctx.http.base}/www/index.html?${new URLSearchParams(query)}`);
    return { page, console };
  };
  return ctx;
}

/// Wait (at most `timeout` ms) until the page's status is in one of `states`; its state and text.
export async function settle(page, states = ["done", "error"], timeout = 900_000) {
  await page.waitForFunction((s) => s.includes(document.getElementById("status").dataset.state), states, { timeout });
  return {
    state: await page.$eval("#status", (e) => e.dataset.state),
    status: await page.$eval("#status", (e) => e.textContent),
  };
}

/// JSON the page leaves in `data-<attr>` of `sel` for tests.
export const json = async (page, sel, attr) => JSON.parse(await page.$eval(sel, (e, a) => e.dataset[a], attr));
