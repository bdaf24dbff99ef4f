// Headless Chromium against a running ComfyUI with the pack: the template browser (one card per workflow, each
// with a title and a thumbnail, found by search) and every template loaded into the real editor (no missing
// node, valid widget values, no overlapping nodes, every title on screen). Prints a JSON report; writes a
// screenshot of the template browser and, with a folder, one of each loaded workflow.
//
//   node tests/browser/workflows_check.mjs http://127.0.0.1:8208 templates.png [shots_dir]
import { mkdirSync } from "node:fs";
import { launch, openEditor } from "./common.mjs";

const [url, shot, shotsDir] = process.argv.slice(2);
const browser = await launch();
const report = { templates: {}, workflows: [] };
const DIALOG = ":is(.p-dialog, [role='dialog'])";
try {
  const page = await openEditor(browser, url, report);
  // 1. what the server offers: names, files, thumbnails
  report.listing = await page.evaluate(async () => {
    const r = await fetch("/api/workflow_templates");
    const all = await r.json();
    const out = {};
    for (const [module, names] of Object.entries(all)) {
      out[module] = [];
      for (const name of names) {
        const base = `/api/workflow_templates/${module}/${name}`;
        const j = await fetch(`${base}.json`);
        const t = await fetch(`${base}.jpg`);
        let json = null;
        try { json = j.ok ? await j.json() : null; } catch { /* reported as not JSON */ }
        out[module].push({ name, json: j.status, isJson: json !== null, jpg: t.status,
                           jpgType: t.headers.get("content-type"), jpgBytes: (await t.arrayBuffer()).byteLength,
                           graph: json });
      }
    }
    return out;
  });
  // 2. the template browser as a user sees it (a PrimeVue .p-dialog up to frontend ~1.5x, a plain
  // role="dialog" element in 1.58: both carry the role)
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  await page.waitForSelector(DIALOG, { timeout: 30000 });
  await page.waitForTimeout(1500);
  const nav = page.locator(DIALOG).getByText("Self Forcing", { exact: true }).first();
  report.templates.categoryTitle = (await nav.count()) ? await nav.textContent() : null;
  if (await nav.count()) await nav.click();
  await page.waitForTimeout(2000);
  const cards = () => page.evaluate(() => [...document.querySelectorAll(":is(.p-dialog, [role='dialog']) [data-testid^='template-workflow-']")]
    .map((c) => ({ id: c.dataset.testid, text: c.innerText.replace(/\s+/g, " ").trim(),
                   img: [...c.querySelectorAll("img")].map((i) => ({ src: i.currentSrc, w: i.naturalWidth })) })));
  await page.screenshot({ path: shot });
  report.templates.cards = await page.evaluate(async () => { // thumbnails load lazily: look at each in view
    const out = [];
    for (const c of document.querySelectorAll(":is(.p-dialog, [role='dialog']) [data-testid^='template-workflow-']")) {
      c.scrollIntoView({ block: "center" });
      const t0 = performance.now();
      const loaded = () => [...c.querySelectorAll("img")].some((i) => i.complete && i.naturalWidth > 0);
      while (!loaded() && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 100));
      out.push({ id: c.dataset.testid, text: c.innerText.replace(/\s+/g, " ").trim(),
                 img: [...c.querySelectorAll("img")].map((i) => ({ src: i.currentSrc, w: i.naturalWidth })) });
    }
    return out;
  });
  const search = page.locator(`${DIALOG} input[type='text'], ${DIALOG} input[placeholder]`).first();
  if (await search.count()) {
    await search.fill("toy demo");
    await page.waitForTimeout(1000);
    report.templates.search = await cards();
  }
  await page.keyboard.press("Escape");
  await page.waitForTimeout(500);
  // 3. every template in the editor
  const ours = Object.entries(report.listing).flatMap(([m, list]) => list.map((t) => ({ module: m, ...t })))
    .filter((t) => t.graph && t.graph.nodes?.some((n) => String(n.type).startsWith("SF_")));
  if (shotsDir) mkdirSync(shotsDir, { recursive: true });
  for (const t of ours) {
    const res = await page.evaluate(async ([graph, name]) => {
      const { app } = window;
      const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
      await app.loadGraphData(graph, true, true, name);
      await new Promise((r) => setTimeout(r, 1200));
      const titleH = LG?.NODE_TITLE_HEIGHT ?? 30;
      const nodes = app.graph._nodes;
      const canvas = app.canvas.canvas;
      const rect = canvas.getBoundingClientRect();
      const boxes = nodes.map((n) => [n.pos[0], n.pos[1] - titleH, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
      const overlaps = [];
      for (let i = 0; i < nodes.length; i++) {
        for (let j = i + 1; j < nodes.length; j++) {
          const a = boxes[i], b = boxes[j];
          if (a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]) overlaps.push([nodes[i].type, nodes[j].type]);
        }
      }
      const union = boxes.reduce((u, b) => [Math.min(u[0], b[0]), Math.min(u[1], b[1]), Math.max(u[2], b[2]),
                                             Math.max(u[3], b[3])], [Infinity, Infinity, -Infinity, -Infinity]);
      const [ux0, uy0] = app.canvas.ds.convertOffsetToCanvas([union[0], union[1]]);
      const [ux1, uy1] = app.canvas.ds.convertOffsetToCanvas([union[2], union[3]]);
      const clip = { x: rect.left + Math.max(0, ux0 - 12), y: rect.top + Math.max(0, uy0 - 12) };
      clip.width = Math.min(rect.left + rect.width, rect.left + ux1 + 12) - clip.x;
      clip.height = Math.min(rect.top + rect.height, rect.top + uy1 + 12) - clip.y;
      const offscreen = [];
      for (const [i, n] of nodes.entries()) {
        const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([boxes[i][0], boxes[i][1]]);
        const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([boxes[i][2], boxes[i][3]]);
        if (x0 < 0 || y0 < 0 || x1 > rect.width || y1 > rect.height) offscreen.push(n.title);
      }
      const badWidgets = [];
      for (const n of nodes) {
        for (const w of n.widgets ?? []) {
          if (w.name?.startsWith("$$") || w.type === "selfforcing_player" || w.options?.serialize === false) continue;
          const v = w.value;
          if (v === undefined || v === null || (typeof v === "number" && !Number.isFinite(v))) {
            badWidgets.push(`${n.type}.${w.name}=${v}`);
          }
          const values = typeof w.options?.values === "function" ? w.options.values() : w.options?.values;
          const isFile = typeof v === "string" && /\.(safetensors|pt|pth|sft|ckpt|txt|jsonl|png|jpe?g|webp|mp4|webm|mov)$/i.test(v);
          if (w.type === "combo" && Array.isArray(values) && !values.includes(v) && !isFile) {
            badWidgets.push(`${n.type}.${w.name}=${v} not in [${values.join(", ")}]`);
          }
        }
      }
      return { name, nodes: nodes.length, clip,
               missing: nodes.filter((n) => !LG?.registered_node_types?.[n.type]).map((n) => n.type),
               overlaps, offscreen, badWidgets,
               players: nodes.filter((n) => n.sfPlayer).map((n) => ({ type: n.type, h: n.size[1] })),
               disabled: nodes.flatMap((n) => (n.widgets ?? []).filter((w) => w.disabled).map((w) => `${n.type}.${w.name}`)) };
    }, [t.graph, t.name]);
    report.workflows.push(res);
    if (shotsDir) await page.screenshot({ path: `${shotsDir}/${t.name}.png`, clip: res.clip });
  }
  for (const list of Object.values(report.listing)) for (const t of list) delete t.graph;
} catch (e) {
  report.errors.push(String(e.stack || e).slice(0, 1500));
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
