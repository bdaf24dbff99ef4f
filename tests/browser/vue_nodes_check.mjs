// Headless Chromium against a running ComfyUI with the pack, frontend >= 1.58 with Nodes 2.0 (the Vue node
// renderer) turned on: the toy demo runs, and the sampler's player keeps a real picture (the renderer never asks
// a DOM widget's getMinHeight) with no host preview image repeating the frames under it. Prints a JSON report.
//
//   node tests/browser/vue_nodes_check.mjs http://127.0.0.1:8208 template.json out.png
import { readFileSync } from "node:fs";
import { launch, openEditor, recordEvents } from "./common.mjs";

const [url, templateFile, shot] = process.argv.slice(2);
const template = JSON.parse(readFileSync(templateFile, "utf8"));
const browser = await launch();
const report = {};
try {
  const page = await openEditor(browser, url, report);
  report.vueNodes = await page.evaluate(async () => {
    await window.app.extensionManager.setting.set("Comfy.VueNodes.Enabled", true);
    return window.app.extensionManager.setting.get("Comfy.VueNodes.Enabled");
  });
  await page.waitForTimeout(1000);
  await recordEvents(page);
  await page.evaluate((t) => window.app.loadGraphData(t, true, true, "toy"), template);
  await page.waitForTimeout(1500);
  await page.evaluate(() => { // a seed no earlier run used: the run streams instead of answering from the cache
    const n = window.app.graph._nodes.find((x) => x.type === "SF_CausalSampler");
    n.widgets.find((w) => w.name === "seed").value = Math.floor(Math.random() * 1e9);
  });
  const look = () => page.evaluate(() => {
    const node = window.app.graph._nodes.find((n) => n.type === "SF_CausalSampler");
    const p = node.sfPlayer;
    const el = document.querySelector(`[data-node-id="${node.id}"]`);
    return { vueElement: !!el, canvasHeight: p.canvas.getBoundingClientRect().height,
             canvasWidth: p.canvas.getBoundingClientRect().width,
             nodeImages: el ? [...el.querySelectorAll("img")].filter((i) => !p.root.contains(i)).length : null,
             frames: Number(p.canvas.dataset.frames || 0), status: p.status.textContent };
  });
  report.before = await look();
  await page.getByRole("button", { name: "Run", exact: true }).first().click();
  await page.waitForFunction(() => (window.__sfSeen || []).some((e) =>
    ["execution_success", "execution_error", "execution_interrupted"].includes(e.kind)), null, { timeout: 300000 });
  await page.waitForTimeout(2000);
  report.events = await page.evaluate(() => (window.__sfSeen || []).map((e) => e.kind));
  report.after = await look();
  await page.screenshot({ path: shot });
} catch (e) {
  report.errors.push(String(e.stack || e).slice(0, 1500));
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
