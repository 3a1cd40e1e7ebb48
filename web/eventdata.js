// What an event's data is: JSON (maybe with a sequence number), a binary
// payload as an RFC 2397 data URL, or plain text.

const DATA_URL = /^data:([^,;]*)((?:;[^,;=]+=[^,;]*)*);base64,([A-Za-z0-9+/=]*)$/s;
// Whole groups of four, padding only at the end: what hub.events.decode_binary
// (base64 with validate=True) can decode.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
export const BINARY_MEDIA_TYPE = "application/octet-stream";

function decodeParam(value) {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** `{mediaType, name, size, url}` for a binary event's data, or null for text (and for undecodable base64). */
export function parseDataUrl(data) {
  if (!data.startsWith("data:")) return null;
  const match = DATA_URL.exec(data);
  if (!match || !BASE64.test(match[3])) return null;
  let name = "";
  for (const param of match[2].split(";").slice(1)) {
    const [key, value] = param.split("=", 2);
    if (key === "name") name = decodeParam(value);
  }
  const b64 = match[3];
  const padding = b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0;
  return {
    mediaType: match[1] || BINARY_MEDIA_TYPE,
    name,
    size: Math.floor((b64.length * 3) / 4) - padding,
    url: data,
  };
}

/** Classifies event data; `seq` and `run` are set when JSON data carries them. */
export function describeData(data) {
  const binary = parseDataUrl(data);
  if (binary) return { kind: "binary", ...binary, seq: null, run: null };
  const first = data.trimStart()[0];
  if (first === "{" || first === "[") {
    try {
      const value = JSON.parse(data);
      const seq = Number.isSafeInteger(value?.seq) ? value.seq : null;
      const run = typeof value?.run === "string" || typeof value?.run === "number" ? String(value.run) : null;
      return { kind: "json", value, seq, run };
    } catch {
      // Not JSON after all: shown as text.
    }
  }
  return { kind: "text", text: data, seq: null, run: null };
}

/** A binary payload as event data, as the hub's publishers build it. */
export function binaryDataUrl(bytes, mediaType, name) {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  const quoted = name
    ? ";name=" + encodeURIComponent(name).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase())
    : "";
  return `data:${mediaType || BINARY_MEDIA_TYPE}${quoted};base64,${btoa(binary)}`;
}

export function formatBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(2)} MiB`;
}
