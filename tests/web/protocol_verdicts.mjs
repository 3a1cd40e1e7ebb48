// Runs web/'s copies of the hub's protocol rules over cases read as JSON on
// stdin and prints their verdicts as JSON, for tests/test_web_protocol.py to
// compare with hub/'s own. Not a test file itself (node --test skips it).
//
// Input: {topics: [str], eventTypes: [str], ids: [str], cursors: [[str, int]],
// canonical: [[str]], dataUrls: [str], binary: [[base64, mediaType, name]],
// resetNotices: [str]}; each key is optional.

import { RESET_EVENT_TYPE, parseResetNotice } from "../../web/sse-hub.js";
import { ID_PART_MAX, MAX_CURSOR_LENGTH, canonicalTopics, decodeCursor, parseId } from "../../web/cursor.js";
import { BINARY_MEDIA_TYPE, binaryDataUrl, parseDataUrl } from "../../web/eventdata.js";
import { RESERVED_EVENT_TYPES, RESERVED_EVENT_TYPE_PREFIX, TOPIC, eventTypeProblem } from "../../web/publish.js";

const pair = (id) => [String(id[0]), String(id[1])];

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

const cases = JSON.parse(await readStdin());
const verdicts = {
  constants: {
    resetEventType: RESET_EVENT_TYPE,
    reservedEventTypes: RESERVED_EVENT_TYPES,
    reservedEventTypePrefix: RESERVED_EVENT_TYPE_PREFIX,
    idPartMax: String(ID_PART_MAX),
    maxCursorLength: MAX_CURSOR_LENGTH,
    binaryMediaType: BINARY_MEDIA_TYPE,
  },
  topics: (cases.topics ?? []).map((topic) => TOPIC.test(topic)),
  eventTypes: (cases.eventTypes ?? []).map((type) => eventTypeProblem(type) === ""),
  ids: (cases.ids ?? []).map((text) => {
    const id = parseId(text);
    return id && pair(id);
  }),
  cursors: (cases.cursors ?? []).map(([cursor, count]) => decodeCursor(cursor, count)?.map(pair) ?? null),
  canonical: (cases.canonical ?? []).map((topics) => canonicalTopics(topics)),
  dataUrls: (cases.dataUrls ?? []).map((data) => {
    const parsed = parseDataUrl(data);
    return parsed && { size: parsed.size, mediaType: parsed.mediaType, name: parsed.name };
  }),
  binary: (cases.binary ?? []).map(([b64, mediaType, name]) => binaryDataUrl(new Uint8Array(Buffer.from(b64, "base64")), mediaType, name)),
  resetNotices: (cases.resetNotices ?? []).map((data) => parseResetNotice(data)),
};
process.stdout.write(JSON.stringify(verdicts));
