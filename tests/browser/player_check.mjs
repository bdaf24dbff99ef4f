// Headless Chromium against a running ComfyUI with the pack: load an API workflow into the real editor, queue
// it from the page (so events go to the page's own client id), and watch the live player draw chunks while the
// prompt is still running. Prints a JSON report; writes a screenshot.
//
//   node tests/browser/player_check.mjs http://127.0.0.1:8206 prompt.api.json out.png
import { readFileSync } from "node:fs";
import { launch, openEditor } from "./common.mjs";

const [url, promptFile, shot] = process.argv.slice(2);
const prompt = JSON.parse(readFileSync(promptFile, "utf8"));
const browser = await launch();
const report = { extensionLoaded: false };
try {
  const page = await openEditor(browser, url, report);
  report.extensionLoaded = (report.extensionLoads ?? 0) > 0;
  report.events = await page.evaluate(async (apiPrompt) => {
    const { app } = window;
    const api = app.api ?? window.comfyAPI?.api?.api;
    const seen = [];
    for (const kind of ["stream_start", "chunk", "stream_end"]) {
      api.addEventListener("selfforcing." + kind, (e) => seen.push({ kind, t: performance.now(), ...e.detail }));
    }
    window.__sfSeen = seen;
    await app.loadApiJson(apiPrompt, "selfforcing_check");
    await app.queuePrompt(0, 1);
    return seen.length;
  }, prompt);
  // while the prompt runs: the player must show frames before the stream has ended
  const during = await page.waitForFunction(() => {
    const seen = window.__sfSeen || [];
    const c = document.querySelector(".selfforcing-player canvas");
    if (!c || !c.dataset.frames) return null;
    return { frames: Number(c.dataset.frames), ended: seen.some((e) => e.kind === "stream_end"),
             chunks: seen.filter((e) => e.kind === "chunk").length };
  }, null, { timeout: 300000, polling: 50 });
  report.during = await during.jsonValue();
  await page.waitForFunction(() => (window.__sfSeen || []).some((e) => e.kind === "stream_end"), null,
                             { timeout: 600000 });
  await page.waitForTimeout(1500);
  report.after = await page.evaluate(() => {
    const c = document.querySelector(".selfforcing-player canvas");
    const status = document.querySelector(".selfforcing-status")?.textContent;
    const seen = window.__sfSeen;
    const ctx = c.getContext("2d");
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < px.length; i += 4) lit += px[i] + px[i + 1] + px[i + 2] > 30 ? 1 : 0;
    return { frames: Number(c.dataset.frames), frame: Number(c.dataset.frame), status, width: c.width,
             height: c.height, litPixels: lit, chunks: seen.filter((e) => e.kind === "chunk").length,
             end: seen.find((e) => e.kind === "stream_end") };
  });
  await page.keyboard.press("Escape");
  await page.screenshot({ path: shot });
  await page.locator(".selfforcing-player").first().screenshot({ path: shot.replace(/\.png$/, "_player.png") });
} catch (e) {
  report.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
