// Self Forcing player: plays the chunks of a video while the graph is still running, and steers live streams.
//
// The sampler / continue / decode / live nodes write each decoded chunk as a JPEG strip to the temp folder and
// send `selfforcing.*` events (nodes/streaming.py, docs/comfyui.md). This extension gives those nodes a player
// widget from the moment they are created (js/lib/player.js), routes the events and the run status to it, keeps
// the node's own preview image from repeating the player's frames, and greys out the sampler's size widgets
// while a latent input decides the size.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { EVENT_PREFIX, parseChunk, parseEnd, parseLiveState, parseStart } from "./lib/events.js";
import { Player } from "./lib/player.js";

const EXTENSION = "selfforcing.live_player";
const PLAYER_NODES = new Set(["SF_CausalSampler", "SF_ContinueSession", "SF_StreamingDecode", "SF_LiveStream",
  "SF_ImageToVideo", "SF_ExtendVideo"]);
const LIVE_NODES = new Set(["SF_LiveStream"]);
const SIZE_WIDGETS = ["width", "height", "length", "batch_size"]; // SF_CausalSampler: unused with a latent
const PREVIEW_WIDGET = "$$canvas-image-preview";
const players = new Map(); // node id (string) -> Player, for the current graph

const host = {
  apiURL: (path) => api.apiURL(path),
  async post(route, body) {
    const r = await api.fetchApi(route, { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify(body) });
    let json = null;
    try { json = await r.json(); } catch { /* an empty or non-JSON body */ }
    return { status: r.status, json };
  },
};

function typeOf(node) { return node?.comfyClass ?? node?.type; }

function attachPlayer(node) {
  if (node.sfPlayer || !PLAYER_NODES.has(typeOf(node))) return node.sfPlayer ?? null;
  const player = new Player(node, host, { live: LIVE_NODES.has(typeOf(node)) });
  node.sfPlayer = player;
  node.addDOMWidget("selfforcing_player", "selfforcing_player", player.root, {
    serialize: false, hideOnZoom: false, getMinHeight: () => player.minHeight,
  });
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    player.destroy();
    for (const [k, p] of players) if (p === player) players.delete(k);
    return onRemoved?.apply(this, args);
  };
  return player;
}

function playerFor(nodeId) {
  const key = String(nodeId);
  const node = app.graph?.getNodeById?.(nodeId) ?? app.graph?.getNodeById?.(Number(nodeId));
  const player = node ? attachPlayer(node) : null;
  if (player) players.set(key, player);
  return player;
}

/** The sampler's width/height/length/batch_size do nothing while a LATENT is connected: show them disabled. */
function syncSizeWidgets(node) {
  if (typeOf(node) !== "SF_CausalSampler") return;
  const slot = node.inputs?.findIndex((i) => i.name === "latent") ?? -1;
  // isInputConnected: the public call (frontend >= 1.58 deprecates reading input.link); older frontends: link
  const linked = slot >= 0 && (typeof node.isInputConnected === "function" ? node.isInputConnected(slot)
                                                                             : node.inputs[slot].link != null);
  for (const w of node.widgets ?? []) {
    if (SIZE_WIDGETS.includes(w.name)) {
      w.disabled = linked;
      w.tooltip = linked ? "set by the connected latent" : undefined;
    }
  }
  node.setDirtyCanvas?.(true, false);
}

/** The player follows the node's fps and live_preview widgets (at load, and when the user changes them). */
function syncPlayerWidgets(node, hook = false) {
  const player = node.sfPlayer;
  if (!player) return;
  for (const w of node.widgets ?? []) {
    if (w.name !== "fps" && w.name !== "live_preview") continue;
    const apply = () => {
      if (w.name === "fps") player.setDefaultFps(Number(w.value));
      else player.setLivePreview(w.value !== false);
    };
    apply();
    if (hook && !w.sfHooked) {
      w.sfHooked = true;
      const cb = w.callback;
      w.callback = function (...args) {
        const r = cb?.apply(this, args);
        apply();
        node.setSize?.([node.size[0], Math.max(node.size[1], node.computeSize?.()[1] ?? 0)]);
        return r;
      };
    }
  }
}

function hidePreview(node) {
  node.imgs = undefined;
  const i = node.widgets?.findIndex((w) => w.name === PREVIEW_WIDGET) ?? -1;
  if (i >= 0) {
    node.widgets[i].onRemove?.();
    node.widgets.splice(i, 1);
  }
}

/** Listen to a host event ("executing") or one of the pack's (":chunk" -> "selfforcing.chunk"). */
function on(kind, handler) {
  api.addEventListener(kind.startsWith(":") ? EVENT_PREFIX + kind.slice(1) : kind, (ev) => {
    try {
      handler(ev.detail);
    } catch (err) {
      console.warn("selfforcing player:", err);
    }
  });
}

const running = new Set(); // player node ids that started executing in the current prompt

if (app.extensions?.some?.((e) => e.name === EXTENSION)) {
  // the pack's folder is served twice (an old copy, or WEB_DIRECTORY plus [tool.comfy] web): keep the first
  console.info(`${EXTENSION}: already registered, skipping a second copy`);
} else {
  app.registerExtension({
    name: EXTENSION,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (!PLAYER_NODES.has(nodeData?.name)) return;
      const draw = nodeType.prototype.onDrawBackground;
      nodeType.prototype.onDrawBackground = function (...args) {
        if (this.sfPlayer?.hasVideo) return hidePreview(this); // the player shows these frames already
        return draw?.apply(this, args);
      };
      const conn = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function (...args) {
        const r = conn?.apply(this, args);
        syncSizeWidgets(this);
        return r;
      };
    },
    nodeCreated(node) {
      const player = attachPlayer(node);
      if (!player) return;
      const [w, h] = node.size;
      const min = node.computeSize?.() ?? [w, h];
      node.setSize?.([Math.max(w, 400), Math.max(h, min[1])]);
      syncSizeWidgets(node);
      syncPlayerWidgets(node, true);
    },
    loadedGraphNode(node) {
      if (!node.sfPlayer) return;
      players.set(String(node.id), node.sfPlayer);
      syncSizeWidgets(node);
      syncPlayerWidgets(node);
      const saved = node.properties?.selfforcing_last;
      if (saved && !node.sfPlayer.info) node.sfPlayer.restore(saved);
    },
    async setup() {
      on(":stream_start", (d) => playerFor(d.node)?.start(parseStart(d)));
      on(":chunk", (d) => playerFor(d.node)?.addChunk(parseChunk(d)));
      on(":live_state", (d) => playerFor(d.node)?.liveState(parseLiveState(d)));
      on(":stream_end", (d) => playerFor(d.node)?.end(parseEnd(d)));
      on("execution_start", () => running.clear());
      on("executed", (d) => playerFor(d?.display_node ?? d?.node)?.executed(d?.output));
      on("execution_cached", (d) => {
        for (const id of d?.nodes ?? []) playerFor(id)?.cached();
      });
      on("executing", (d) => {
        const id = typeof d === "object" && d !== null ? d.node : d;
        if (id === null || id === undefined) {
          for (const key of running) playerFor(key)?.finishedWithoutStream();
          running.clear();
          return;
        }
        const p = playerFor(id);
        if (p) {
          running.add(String(id));
          p.running();
        }
      });
      window.selfForcingPlayers = players; // for debugging and the browser test
    },
  });
}
