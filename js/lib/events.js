// Parsing of the pack's websocket events (sent by nodes/streaming.py and the live node) into plain values.
//
// selfforcing.stream_start {stream, node, source, fps, total_chunks, width, height}
//                          live streams add: live: true, total_chunks: null, prompt, controls_url
// selfforcing.chunk        {stream, node, source, chunk, total_chunks, start_frame, frames, width, height, fps,
//                           image: {filename, subfolder, type}, elapsed_s}
//                          live streams add: live, prompt, actions: [{action, text?, blend_chunks?, ok, error?}],
//                           gen_fps, chunk_s
// selfforcing.live_state   {stream, node, source, state: running|paused|stopping|stopped, chunk, prompt, paused}
// selfforcing.stream_end   {stream, node, source, chunks, frames, elapsed_s,
//                           status: done|stopped|limit|interrupted|error}
//                          live streams add: file: {filename, subfolder, type: "output"} (the finished mp4)

export const EVENT_PREFIX = "selfforcing.";
export const EVENTS = ["stream_start", "chunk", "live_state", "stream_end"].map((e) => EVENT_PREFIX + e);
export const END_STATUSES = ["done", "stopped", "limit", "interrupted", "error"];
export const LIVE_STATES = ["running", "paused", "stopping", "stopped"];

function need(obj, key, kind) {
  const v = obj?.[key];
  if (kind === "int" ? !Number.isInteger(v) || v < 0 : kind === "num" ? typeof v !== "number" || !(v > 0)
    : typeof v !== "string" || v === "") {
    throw new Error(`selfforcing event: bad or missing '${key}' (${JSON.stringify(v)})`);
  }
  return v;
}

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const str = (v) => (typeof v === "string" ? v : null);

function fileRef(f) {
  if (!f || typeof f.filename !== "string" || f.filename === "") return null;
  return { filename: f.filename, subfolder: String(f.subfolder ?? ""), type: String(f.type ?? "output") };
}

function parseActions(list) {
  if (!Array.isArray(list)) return [];
  return list.filter((a) => a && typeof a.action === "string").map((a) => ({
    action: a.action, text: str(a.text), blendChunks: Number.isInteger(a.blend_chunks) ? a.blend_chunks : null,
    ok: a.ok !== false, error: str(a.error),
  }));
}

/** A chunk event -> {stream, node, source, chunk, startFrame, frames, width, height, fps, image, elapsed, ...}. */
export function parseChunk(detail) {
  const image = detail?.image ?? {};
  return {
    stream: need(detail, "stream", "str"),
    node: String(detail.node ?? ""),
    source: String(detail.source ?? ""),
    chunk: need(detail, "chunk", "int"),
    totalChunks: Number.isInteger(detail.total_chunks) ? detail.total_chunks : null,
    startFrame: need(detail, "start_frame", "int"),
    frames: need(detail, "frames", "int"),
    width: need(detail, "width", "int"),
    height: need(detail, "height", "int"),
    fps: need(detail, "fps", "num"),
    image: {filename: need(image, "filename", "str"), subfolder: String(image.subfolder ?? ""),
            type: String(image.type ?? "temp")},
    elapsed: num(detail.elapsed_s),
    live: detail.live === true,
    prompt: str(detail.prompt),
    actions: parseActions(detail.actions),
    genFps: num(detail.gen_fps),
    chunkSeconds: num(detail.chunk_s),
  };
}

export function parseStart(detail) {
  return {stream: need(detail, "stream", "str"), node: String(detail.node ?? ""), source: String(detail.source ?? ""),
          fps: need(detail, "fps", "num"),
          totalChunks: Number.isInteger(detail.total_chunks) ? detail.total_chunks : null,
          width: Number.isInteger(detail.width) ? detail.width : null,
          height: Number.isInteger(detail.height) ? detail.height : null,
          live: detail.live === true, prompt: str(detail.prompt),
          controlsUrl: str(detail.controls_url) ?? "/selfforcing/live/control",
          // the stream's first chunk index: a continued session, image to video or an extended video does not
          // start at chunk 0 (older servers do not send it: 0)
          firstChunk: Number.isInteger(detail.first_chunk) && detail.first_chunk >= 0 ? detail.first_chunk : 0};
}

export function parseLiveState(detail) {
  const state = need(detail, "state", "str");
  if (!LIVE_STATES.includes(state)) throw new Error(`selfforcing event: unknown live state ${JSON.stringify(state)}`);
  return {stream: need(detail, "stream", "str"), node: String(detail.node ?? ""), state,
          chunk: Number.isInteger(detail.chunk) ? detail.chunk : null, prompt: str(detail.prompt),
          paused: detail.paused === true || state === "paused"};
}

export function parseEnd(detail) {
  return {stream: need(detail, "stream", "str"), node: String(detail.node ?? ""),
          chunks: Number.isInteger(detail.chunks) ? detail.chunks : null,
          frames: Number.isInteger(detail.frames) ? detail.frames : null,
          status: END_STATUSES.includes(detail.status) ? detail.status : "done",
          elapsed: num(detail.elapsed_s), file: fileRef(detail.file)};
}

/** The server path of a file the server serves (/view; pass it through api.apiURL). */
export function viewPath(image) {
  const q = new URLSearchParams({filename: image.filename, subfolder: image.subfolder ?? "", type: image.type ?? "temp"});
  return `/view?${q.toString()}`;
}

/** Frames of a chunk strip: the source rectangle of frame i is (0, i*height, width, height). */
export function stripFrames(chunk) {
  return Array.from({length: chunk.frames}, (_, i) => ({
    stream: chunk.stream, chunk: chunk.chunk, index: chunk.startFrame + i,
    sx: 0, sy: i * chunk.height, width: chunk.width, height: chunk.height,
  }));
}
