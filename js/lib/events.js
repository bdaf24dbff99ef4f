// Parsing of the pack's websocket events (sent by nodes/streaming.py) into plain values the player uses.
//
// selfforcing.stream_start {stream, node, source, fps, total_chunks, width, height}
// selfforcing.chunk        {stream, node, source, chunk, total_chunks, start_frame, frames, width, height, fps,
//                           image: {filename, subfolder, type}, elapsed_s}
// selfforcing.stream_end   {stream, node, source, chunks, frames, elapsed_s, status}

export const EVENT_PREFIX = "selfforcing.";
export const EVENTS = ["stream_start", "chunk", "stream_end"].map((e) => EVENT_PREFIX + e);

function need(obj, key, kind) {
  const v = obj?.[key];
  if (kind === "int" ? !Number.isInteger(v) || v < 0 : kind === "num" ? typeof v !== "number" || !(v > 0)
    : typeof v !== "string" || v === "") {
    throw new Error(`selfforcing event: bad or missing '${key}' (${JSON.stringify(v)})`);
  }
  return v;
}

/** A chunk event -> {stream, node, source, chunk, startFrame, frames, width, height, fps, image, elapsed}. */
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
    elapsed: typeof detail.elapsed_s === "number" ? detail.elapsed_s : null,
  };
}

export function parseStart(detail) {
  return {stream: need(detail, "stream", "str"), node: String(detail.node ?? ""), source: String(detail.source ?? ""),
          fps: need(detail, "fps", "num"),
          totalChunks: Number.isInteger(detail.total_chunks) ? detail.total_chunks : null};
}

export function parseEnd(detail) {
  return {stream: need(detail, "stream", "str"), node: String(detail.node ?? ""),
          frames: Number.isInteger(detail.frames) ? detail.frames : null,
          status: ["done", "interrupted", "error"].includes(detail.status) ? detail.status : "done",
          elapsed: typeof detail.elapsed_s === "number" ? detail.elapsed_s : null};
}

/** The server path of a chunk strip (to pass through api.apiURL). */
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
