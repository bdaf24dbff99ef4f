// Headless Chromium against a running ComfyUI with the pack: the player before the first run, after a run, on a
// rerun that ComfyUI answers from its cache, and on a fully cached run in a fresh page (with the saved workflow,
// and with the plain template). Uses the toy demo template (seconds on a CPU). Prints a JSON report.
//
//   node tests/browser/cached_check.mjs http://127.0.0.1:8208 template.json out.png
import { readFileSync } from "node:fs";
import { launch, openEditor, recordEvents } from "./common.mjs";

const [url, templateFile, shot] = process.argv.slice(2);
const template = JSON.parse(readFileSync(templateFile, "utf8"));
const browser = await launch();
const report = { pages: {} };

/** The sampler node's player as the user sees it. */
const look = (page) => page.evaluate(() => {
  const node = window.app.graph._nodes.find((n) => n.type === "SF_CausalSampler");
  const p = node.sfPlayer;
  const root = p.root, screen = root.querySelector(".sf-screen"), btn = root.querySelector(".sf-btn");
  const probe = document.createElement("div");
  probe.style.background = "var(--comfy-input-bg)";
  document.body.append(probe);
  const themeBg = getComputedStyle(probe).backgroundColor;
  probe.remove();
  return { height: node.size[1], frames: Number(p.canvas.dataset.frames || 0), shown: !p.placeholder.hidden,
           status: p.status.textContent, nodePreview: !!node.widgets.find((w) => w.name === "$$canvas-image-preview"),
           imgs: node.imgs?.length ?? 0, screenWidth: screen.clientWidth, rootWidth: root.clientWidth,
           buttonBg: getComputedStyle(btn).backgroundColor, themeBg, nativeControls: root.querySelector("video")?.controls,
           saved: !!node.properties?.selfforcing_last };
});

async function runOnce(page) {
  await page.evaluate(() => { window.__sfSeen.length = 0; });
  await page.getByRole("button", { name: "Run", exact: true }).first().click();
  await page.waitForFunction(() => (window.__sfSeen || []).some((e) =>
    ["execution_success", "execution_error", "execution_interrupted"].includes(e.kind)), null, { timeout: 300000 });
  await page.waitForTimeout(1500);
  return page.evaluate(() => (window.__sfSeen || []).map((e) => e.kind));
}

try {
  // page 1: before the first run, the first run, a cached rerun
  const p1 = await openEditor(browser, url, report);
  await recordEvents(p1);
  await p1.evaluate((t) => window.app.loadGraphData(t, true, true, "toy"), template);
  await p1.waitForTimeout(800);
  report.pages.before = await look(p1);
  report.pages.firstRunEvents = await runOnce(p1);
  report.pages.after = await look(p1);
  await p1.locator(".selfforcing-player").first().screenshot({ path: shot });
  report.pages.rerunEvents = await runOnce(p1);
  report.pages.rerun = await look(p1);
  const savedGraph = await p1.evaluate(() => window.app.graph.serialize());
  await p1.close();
  // page 2: a fresh page with the workflow as the first page saved it (node properties included)
  const p2 = await openEditor(browser, url, report);
  await recordEvents(p2);
  await p2.evaluate((g) => window.app.loadGraphData(g, true, true, "toy saved"), savedGraph);
  await p2.waitForTimeout(2000);
  report.pages.freshSavedBefore = await look(p2);
  report.pages.freshSavedEvents = await runOnce(p2);
  report.pages.freshSaved = await look(p2);
  await p2.close();
  // page 3: a fresh page with the plain template (nothing remembered): the run is cached all the same
  const p3 = await openEditor(browser, url, report);
  await recordEvents(p3);
  await p3.evaluate((t) => window.app.loadGraphData(t, true, true, "toy plain"), template);
  await p3.waitForTimeout(800);
  report.pages.freshPlainBefore = await look(p3);
  report.pages.freshPlainEvents = await runOnce(p3);
  report.pages.freshPlain = await look(p3);
} catch (e) {
  report.errors.push(String(e.stack || e).slice(0, 1500));
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
