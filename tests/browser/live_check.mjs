// Headless Chromium against a running ComfyUI with the pack: start a live toy stream from the editor, steer it
// from the player like a user (type a prompt + Enter, Pause, Resume, Stop) and report what happened. Prints a
// JSON report (the Python test checks the frames); writes screenshots.
//
//   node tests/browser/live_check.mjs http://127.0.0.1:8208 live.api.json "a blue circle moving down slow" out.png
import { readFileSync } from "node:fs";
import { count, launch, loadApiGraph, openEditor, recordEvents } from "./common.mjs";

const [url, promptFile, newPrompt, shot] = process.argv.slice(2);
const prompt = JSON.parse(readFileSync(promptFile, "utf8"));
const browser = await launch();
const report = { steps: [] };
const step = (s) => report.steps.push(s);
try {
  const page = await openEditor(browser, url, report);
  report.controlReplies = []; // what the server answered the player's control requests
  page.on("response", async (r) => {
    if (!r.url().includes("/selfforcing/live/control")) return;
    try { report.controlReplies.push({ status: r.status(), ...(await r.json()) }); } catch { /* not JSON */ }
  });
  await recordEvents(page);
  await loadApiGraph(page, prompt, "selfforcing_live_check");
  // the player is on the live node before anything runs
  report.before = await page.evaluate(() => ({
    players: document.querySelectorAll(".selfforcing-player").length,
    promptBox: !!document.querySelector(".sf-prompt"), promptDisabled: document.querySelector(".sf-prompt")?.disabled,
  }));
  await page.getByRole("button", { name: "Run", exact: true }).first().click(); // the editor's Run button
  step("run clicked");
  const chunks = () => count(page, "chunk");
  await page.waitForFunction(() => (window.__sfSeen || []).filter((e) => e.kind === "chunk").length >= 3 &&
    !document.querySelector(".sf-prompt").disabled, null, { timeout: 300000, polling: 50 });
  step("streaming");
  // type the new prompt in the player's box, as a user does, and press Enter
  const box = page.locator(".sf-prompt").first();
  await box.click();
  report.typedAtChunk = await chunks();
  await page.keyboard.type(newPrompt, { delay: 5 });
  await page.keyboard.press("Enter");
  report.enterAtChunk = await chunks();
  report.pendingLine = await page.locator(".sf-live-panel .sf-line").first().textContent();
  step("prompt entered");
  await page.waitForFunction((p) => (window.__sfSeen || []).some((e) => e.kind === "chunk" && e.prompt === p),
                             newPrompt, { timeout: 120000, polling: 20 });
  const switched = await chunks();
  await page.waitForFunction((n) => (window.__sfSeen || []).filter((e) => e.kind === "chunk").length >= n,
                             switched + 4, { timeout: 120000, polling: 20 });
  await page.waitForTimeout(300);
  report.nowLine = await page.locator(".sf-live-panel .sf-line").first().textContent();
  report.badge = await page.locator(".sf-badge").first().textContent();
  await page.locator(".selfforcing-player").first().screenshot({ path: shot.replace(/\.png$/, "_player.png") });
  // pause: no chunk while paused; resume: chunks again
  await page.locator(".sf-live-panel button", { hasText: "Pause" }).click();
  await page.waitForFunction(() => (window.__sfSeen || []).some((e) => e.kind === "live_state" && e.state === "paused"),
                             null, { timeout: 60000, polling: 20 });
  const atPause = await chunks();
  await page.waitForTimeout(1500);
  report.pause = { chunksDuring: (await chunks()) - atPause,
                   button: await page.locator(".sf-live-panel button").nth(0).textContent(),
                   badge: await page.locator(".sf-badge").first().textContent() };
  await page.locator(".sf-live-panel button", { hasText: "Resume" }).click();
  await page.waitForFunction((n) => (window.__sfSeen || []).filter((e) => e.kind === "chunk").length >= n + 2,
                             atPause, { timeout: 60000, polling: 20 });
  report.pause.resumed = true;
  step("paused and resumed");
  await page.screenshot({ path: shot });
  // stop: the run ends with a file, which the player then plays
  await page.locator(".sf-live-panel button", { hasText: "Stop" }).click();
  await page.waitForFunction(() => (window.__sfSeen || []).some((e) => e.kind === "stream_end"), null,
                             { timeout: 120000, polling: 50 });
  await page.waitForFunction(() => {
    const v = document.querySelector(".selfforcing-player video");
    return v && !v.hidden && v.readyState >= 2 && v.duration > 0;
  }, null, { timeout: 30000, polling: 100 }).catch(() => {});
  await page.waitForTimeout(800);
  report.after = await page.evaluate(() => {
    const v = document.querySelector(".selfforcing-player video");
    const seen = window.__sfSeen;
    return { video: { hidden: v.hidden, readyState: v.readyState, duration: v.duration, src: v.currentSrc,
                      paused: v.paused, time: v.currentTime },
             status: document.querySelector(".selfforcing-status")?.textContent,
             badge: document.querySelector(".sf-badge")?.textContent,
             promptDisabled: document.querySelector(".sf-prompt")?.disabled,
             start: seen.find((e) => e.kind === "stream_start"), end: seen.find((e) => e.kind === "stream_end"),
             states: seen.filter((e) => e.kind === "live_state").map((e) => e.state),
             chunks: seen.filter((e) => e.kind === "chunk").map((e) => ({ chunk: e.chunk, prompt: e.prompt,
               actions: e.actions, image: e.image, frames: e.frames, start_frame: e.start_frame })) };
  });
  await page.locator(".selfforcing-player").first().screenshot({ path: shot.replace(/\.png$/, "_stopped.png") });
} catch (e) {
  report.errors.push(String(e.stack || e).slice(0, 1500));
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
