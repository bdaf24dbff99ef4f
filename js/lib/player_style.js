// The player's look: ComfyUI's own theme variables (the frontend sets them for light and dark palettes), so the
// player reads like the node's other widgets. Icons are the frontend's PrimeIcons (`pi pi-*`). Injected once.

const CSS = `
.sf-player { display:grid; grid-template-rows:minmax(64px, 1fr) auto auto auto; gap:4px; width:100%; height:100%;
  box-sizing:border-box; font-size:11px; color:var(--input-text, #ddd); font-family:inherit; overflow:hidden; }
.sf-player.sf-off { grid-template-rows:auto; }
.sf-player * { box-sizing:border-box; }
.sf-screen { position:relative; min-height:64px; border-radius:6px; overflow:hidden;
  background:var(--comfy-input-bg, #222); border:1px solid var(--border-color, #444); }
.sf-screen canvas, .sf-screen video { position:absolute; inset:0; width:100%; height:100%; object-fit:contain;
  display:block; background:transparent; }
.sf-placeholder { position:absolute; inset:0; display:flex; align-items:center; justify-content:center; gap:6px;
  padding:8px; text-align:center; color:var(--descrip-text, #999); pointer-events:none; }
.sf-badge { position:absolute; left:6px; top:6px; padding:1px 6px; border-radius:4px; font-size:10px;
  background:rgba(0,0,0,.6); color:#fff; cursor:default; white-space:nowrap; display:none; }
.sf-badge.sf-live { cursor:pointer; }
.sf-badge .sf-dot { display:inline-block; width:7px; height:7px; border-radius:50%; margin-right:4px;
  background:#e5484d; vertical-align:middle; }
.sf-badge.sf-paused .sf-dot { background:#f5a524; }
.sf-badge.sf-ended .sf-dot { background:#888; }
.sf-row { display:flex; align-items:center; gap:4px; min-height:24px; flex-wrap:wrap; }
.sf-btn { display:inline-flex; align-items:center; justify-content:center; gap:4px; height:24px; min-width:24px;
  padding:0 6px; border-radius:4px; border:1px solid var(--border-color, #444); cursor:pointer; font:inherit;
  background:var(--comfy-input-bg, #222); color:var(--input-text, #ddd); }
.sf-btn:hover:not(:disabled) { background:var(--comfy-menu-secondary-bg, #333); }
.sf-btn:disabled { opacity:.45; cursor:default; }
.sf-btn .pi { font-size:11px; }
.sf-player input[type=range] { flex:1 1 60px; min-width:40px; accent-color:var(--p-primary-color, #3b82f6); }
.sf-input { height:24px; border-radius:4px; border:1px solid var(--border-color, #444); padding:0 6px; font:inherit;
  background:var(--comfy-input-bg, #222); color:var(--input-text, #ddd); }
.sf-input:focus { outline:1px solid var(--p-primary-color, #3b82f6); }
.sf-prompt { min-width:0; width:100%; }
.sf-num { width:44px; }
.sf-time { color:var(--descrip-text, #999); white-space:nowrap; font-variant-numeric:tabular-nums; }
.sf-line { color:var(--descrip-text, #999); white-space:nowrap; overflow:hidden; text-overflow:ellipsis;
  min-height:14px; }
.sf-line.sf-error { color:var(--error-text, #ff4444); white-space:normal; }
.sf-live-panel { display:flex; flex-direction:column; gap:4px; }
.sf-live-panel > * { flex-shrink:0; }
.sf-live-panel[hidden] { display:none; }
.sf-spacer { flex:1 1 auto; }
.sf-off > :not(.selfforcing-status) { display:none !important; }
.sf-player [hidden] { display:none !important; }
`;

export function ensureStyles(doc = document) {
  if (doc.getElementById("selfforcing-player-style")) return;
  const el = doc.createElement("style");
  el.id = "selfforcing-player-style";
  el.textContent = CSS;
  doc.head.appendChild(el);
}
