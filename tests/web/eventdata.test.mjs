// Event data: JSON with a sequence number, binary as an RFC 2397 data URL, or text (web/eventdata.js).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { BINARY_MEDIA_TYPE, binaryDataUrl, describeData, formatBytes, parseDataUrl } from "../../web/eventdata.js";

const bytes = (...values) => new Uint8Array(values);

describe("parseDataUrl", () => {
  test("reads the media type, the name and the decoded size", () => {
    assert.deepEqual(parseDataUrl("data:image/png;name=dot.png;base64,iVBORw0K"), {
      mediaType: "image/png",
      name: "dot.png",
      size: 6,
      url: "data:image/png;name=dot.png;base64,iVBORw0K",
    });
  });

  test("counts the padding out of the size", () => {
    assert.equal(parseDataUrl("data:;base64,").size, 0);
    assert.equal(parseDataUrl("data:;base64,AA==").size, 1);
    assert.equal(parseDataUrl("data:;base64,AAA=").size, 2);
    assert.equal(parseDataUrl("data:;base64,AAAA").size, 3);
    assert.equal(parseDataUrl("data:;base64,AAAAAA==").size, 4);
  });

  test("an empty media type is application/octet-stream", () => {
    assert.equal(parseDataUrl("data:;base64,AAAA").mediaType, BINARY_MEDIA_TYPE);
  });

  test("percent-decodes the name, and keeps a name that does not decode as it is", () => {
    assert.equal(parseDataUrl("data:text/plain;name=caf%C3%A9%20menu.txt;base64,").name, "café menu.txt");
    assert.equal(parseDataUrl("data:text/plain;name=100%;base64,").name, "100%");
    assert.equal(parseDataUrl("data:text/plain;charset=utf-8;base64,").name, "");
  });

  test("text is not a data URL", () => {
    for (const data of ["", "hello", "data:", "data:text/plain,hello", "DATA:;base64,AAAA", " data:;base64,AAAA", "data:;base64,AAAA ", "data:a,b;base64,AAAA", "data:;x;base64,AAAA"]) {
      assert.equal(parseDataUrl(data), null, data);
    }
  });

  test("base64 the hub could not decode is not binary either", () => {
    for (const b64 of ["A", "AB", "ABC", "AB=", "AB=C", "=", "==", "A===", "AA==AAAA", "AAA=AAAA"]) {
      assert.equal(parseDataUrl(`data:;base64,${b64}`), null, b64);
    }
  });
});

describe("binaryDataUrl", () => {
  test("builds what the Python publishers build", () => {
    assert.equal(binaryDataUrl(bytes(1, 2, 3), "", ""), "data:application/octet-stream;base64,AQID");
    assert.equal(binaryDataUrl(bytes(), "image/png", "a b.png"), "data:image/png;name=a%20b.png;base64,");
    assert.equal(binaryDataUrl(bytes(0xff), "x/y", "it's (1)*!~.txt"), "data:x/y;name=it%27s%20%281%29%2A%21~.txt;base64,/w==");
  });

  test("round-trips through parseDataUrl and atob", () => {
    const payload = new Uint8Array(70_000).map((_, i) => (i * 7) % 256);
    const url = binaryDataUrl(payload, "application/x-test", "résumé;v=2,final.bin");
    const parsed = parseDataUrl(url);
    assert.equal(parsed.size, payload.length);
    assert.equal(parsed.name, "résumé;v=2,final.bin");
    assert.equal(parsed.mediaType, "application/x-test");
    const decoded = Uint8Array.from(atob(url.slice(url.indexOf(",") + 1)), (c) => c.charCodeAt(0));
    assert.deepEqual(decoded, payload);
  });
});

describe("describeData", () => {
  test("JSON objects and arrays, with seq and run when they carry them", () => {
    assert.deepEqual(describeData('{"seq": 4, "run": "abc"}'), { kind: "json", value: { seq: 4, run: "abc" }, seq: 4, run: "abc" });
    assert.deepEqual(describeData('  {"seq": 4, "run": 7}'), { kind: "json", value: { seq: 4, run: 7 }, seq: 4, run: "7" });
    assert.deepEqual(describeData("[1, 2]"), { kind: "json", value: [1, 2], seq: null, run: null });
  });

  test("a seq must be a safe integer to count", () => {
    for (const seq of ["1.5", '"3"', "null", "9007199254740993", "true"]) {
      assert.equal(describeData(`{"seq": ${seq}}`).seq, null, seq);
    }
    assert.equal(describeData('{"seq": -2}').seq, -2);
    assert.equal(describeData('{"seq": 1, "run": null}').run, null);
    assert.equal(describeData('{"seq": 1, "run": {"a": 1}}').run, null);
  });

  test("anything else is text", () => {
    assert.deepEqual(describeData("42"), { kind: "text", text: "42", seq: null, run: null });
    assert.deepEqual(describeData("{not json"), { kind: "text", text: "{not json", seq: null, run: null });
    assert.deepEqual(describeData(""), { kind: "text", text: "", seq: null, run: null });
    assert.equal(describeData("data:;base64,ABC").kind, "text");
  });

  test("a data URL is binary", () => {
    const described = describeData("data:;name=x;base64,AAAA");
    assert.equal(described.kind, "binary");
    assert.equal(described.size, 3);
    assert.equal(described.name, "x");
    assert.equal(described.seq, null);
  });
});

describe("formatBytes", () => {
  test("B, KiB and MiB", () => {
    assert.equal(formatBytes(0), "0 B");
    assert.equal(formatBytes(1023), "1023 B");
    assert.equal(formatBytes(1024), "1.0 KiB");
    assert.equal(formatBytes(1536), "1.5 KiB");
    assert.equal(formatBytes(1024 * 1024), "1.00 MiB");
    assert.equal(formatBytes(5.5 * 1024 * 1024), "5.50 MiB");
  });
});
