// Shared steps of the headless-Chromium checks (tests/test_browser_player.py): start the browser, open the real
// editor, lay out a graph loaded from API JSON so every node is on screen, collect errors.
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
}

/** A page on the editor, ready (the pack's extension loaded), errors and failed requests collected in `report`. */
export async function openEditor(browser, url, report, { viewport = { width: 1600, height: 1000 } } = {}) {
  const page = await browser.newPage({ viewport });
  report.errors ??= [];
  report.consoleErrors ??= [];
  report.failedRequests ??= [];
  page.on("pageerror", (e) => report.errors.push(String(e.stack || e).slice(0, 600)));
  page.on("console", (m) => { if (m.type() === "error") report.consoleErrors.push(m.text().slice(0, 300)); });
  page.on("response", (r) => { if (r.status() >= 400) report.failedRequests.push(`${r.status()} ${r.url()}`); });
  page.on("requestfinished", (r) => {
    if (r.url().includes("/extensions/") && r.url().endsWith("self_forcing_player.js")) {
      report.extensionLoads = (report.extensionLoads ?? 0) + 1;
    }
  });
  await page.goto(url, { waitUntil: "networkidle", timeout: 120000 });
  await page.waitForFunction(() => window.app?.graph && window.selfForcingPlayers, null, { timeout: 120000 });
  await page.waitForTimeout(1000);
  await page.keyboard.press("Escape"); // the first-run template dialog
  return page;
}

/** Errors that come from the pack (the editor itself logs a few unrelated ones on a bare server). */
export function packErrors(report) {
  return [...report.errors, ...report.consoleErrors].filter((e) => /selfforcing|self_forcing|SelfForcing|sf-/i.test(e));
}

/** Load an API-format graph and place its nodes in one row that fits the window (node order = id order). */
export async function loadApiGraph(page, apiPrompt, name) {
  await page.evaluate(async ([p, n]) => {
    const { app } = window;
    await app.loadApiJson(p, n);
    const nodes = [...app.graph._nodes].sort((a, b) => a.id - b.id);
    let x = 0;
    for (const node of nodes) {
      node.pos = [x, 0];
      x += node.size[0] + 50;
    }
    const h = Math.max(...nodes.map((node) => node.size[1])) + 40;
    const scale = Math.min(1, 1480 / x, 860 / h);
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [20, 40];
    app.graph.setDirtyCanvas(true, true);
  }, [apiPrompt, name]);
  await page.waitForTimeout(300);
}

/** Record the pack's websocket events in window.__sfSeen (as the page's own client receives them). */
export async function recordEvents(page) {
  await page.evaluate(() => {
    const api = window.app.api;
    window.__sfSeen = [];
    for (const kind of ["stream_start", "chunk", "live_state", "stream_end"]) {
      api.addEventListener("selfforcing." + kind,
                           (e) => window.__sfSeen.push({ kind, t: performance.now(), ...e.detail }));
    }
    for (const kind of ["execution_cached", "execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(kind, (e) => window.__sfSeen.push({ kind, t: performance.now(), detail: e.detail }));
    }
  });
}

export const count = (page, kind) =>
  page.evaluate((k) => (window.__sfSeen || []).filter((e) => e.kind === k).length, kind);
