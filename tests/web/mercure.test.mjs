// The Mercure protocol as the page speaks it (web/mercure.js): subscription
// queries, update bodies, and the rules the page checks before the hub does.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  MERCURE_PATH,
  SUBSCRIPTIONS_PATTERN,
  idProblem,
  iris,
  matcherProblem,
  subscribeQuery,
  subscribeUrl,
  topicProblem,
  typeProblem,
  updateBody,
} from "../../web/mercure.js";

describe("iris", () => {
  test("splits on white space only: an IRI may hold a comma", () => {
    assert.deepEqual(iris("  https://e.com/a,b \n /books/:id\t* "), ["https://e.com/a,b", "/books/:id", "*"]);
    assert.deepEqual(iris(" \n"), []);
  });
});

describe("subscribeQuery", () => {
  test("exact topics as match, URL patterns as matchURLPattern, in order", () => {
    const query = subscribeQuery({ exact: ["https://e.com/1", "a b"], patterns: ["/books/:id"] });
    assert.deepEqual([...query], [["match", "https://e.com/1"], ["match", "a b"], ["matchURLPattern", "/books/:id"]]);
  });

  test("* alone is the wildcard, whichever field it is in", () => {
    assert.deepEqual([...subscribeQuery({ patterns: ["*"] })], [["match", "*"]]);
    assert.deepEqual([...subscribeQuery({ exact: ["*"] })], [["match", "*"]]);
  });

  test("the token goes in as authorization, a first cursor as lastEventID", () => {
    const query = subscribeQuery({ exact: ["t"], token: "a.b.c", lastEventId: "#1:2-3" });
    assert.equal(query.get("authorization"), "a.b.c");
    assert.equal(query.get("lastEventID"), "#1:2-3");
    assert.deepEqual([...subscribeQuery({ exact: ["t"] }).keys()], ["match"], "nothing empty is sent");
  });

  test("the URL is relative to the page and encodes what it must", () => {
    const url = subscribeUrl({ patterns: [SUBSCRIPTIONS_PATTERN], lastEventId: "#7" });
    assert.equal(url, `${MERCURE_PATH}?matchURLPattern=%2F.well-known%2Fmercure%2Fsubscriptions%2F*&lastEventID=%237`);
    assert.ok(!url.startsWith("/"), "relative: the hub may sit under a path");
  });
});

describe("updateBody", () => {
  test("topics repeat; the optional fields go only when set", () => {
    const body = updateBody({ topics: ["https://e.com/1", "https://e.com/1.jsonld"], data: "a=b&c" });
    assert.equal(body.toString(), "topic=https%3A%2F%2Fe.com%2F1&topic=https%3A%2F%2Fe.com%2F1.jsonld&data=a%3Db%26c");
  });

  test("private, id, type and retry", () => {
    const body = updateBody({ topics: ["t"], data: "", private: true, id: "urn:x", type: "book.updated", retry: 1500 });
    assert.deepEqual([...body], [["topic", "t"], ["data", ""], ["private", "on"], ["id", "urn:x"], ["type", "book.updated"], ["retry", "1500"]]);
    assert.equal(updateBody({ topics: ["t"], private: false }).has("private"), false, "the hub reads presence, not value");
  });

  test("round-trips through a form parser, line breaks and all", () => {
    const data = "line one\nline two ☕ %20 +";
    const parsed = new URLSearchParams(updateBody({ topics: ["café/☕"], data }).toString());
    assert.equal(parsed.get("data"), data);
    assert.equal(parsed.get("topic"), "café/☕");
  });
});

describe("problems", () => {
  test("matchers: not empty, no controls, at most 1024 bytes", () => {
    for (const ok of ["*", "/books/:id", "https://e.com/{id}", "x".repeat(1024), "é".repeat(512)]) assert.equal(matcherProblem(ok), "", ok);
    assert.match(matcherProblem(""), /empty/);
    assert.match(matcherProblem("a\u0085b"), /control/);
    assert.match(matcherProblem("a\tb"), /control/);
    assert.match(matcherProblem("é".repeat(513)), /1024 bytes/);
  });

  test("an update's topic is not * nor in the hub's namespace", () => {
    assert.match(topicProblem("*"), /every topic/);
    for (const topic of ["/.well-known/mercure/subscriptions/x", ".well-known/mercure", "/.well-known/mercure"]) {
      assert.match(topicProblem(topic), /hub's own/, topic);
    }
    assert.equal(topicProblem("/.well-known/mercurey"), "");
    assert.equal(topicProblem("https://e.com/books/1"), "");
  });

  test("types: no line breaks, not mercure", () => {
    assert.equal(typeProblem(""), "");
    assert.equal(typeProblem("any thing: even spaces"), "");
    assert.match(typeProblem("mercure"), /hub's own/);
    assert.match(typeProblem("a\rb"), /line break/);
  });

  test("ids: not the hub's # names, no line breaks or NUL", () => {
    assert.equal(idProblem(""), "");
    assert.equal(idProblem("urn:uuid:1"), "");
    assert.match(idProblem("#1"), /#/);
    assert.match(idProblem("a\0b"), /NUL/);
  });
});
