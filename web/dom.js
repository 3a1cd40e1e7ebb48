// A tiny element builder: text always goes in as text, never as HTML.

/**
 * h("li", {class: "ev", "data-testid": "event", onclick: fn}, child, "text")
 * Keys starting with "on" become listeners; `text` sets textContent;
 * boolean values set or drop the attribute.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") element.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Sets an element's text only when it changed, so an idle frame touches nothing. */
export function setText(element, text) {
  const value = String(text);
  if (element.textContent !== value) element.textContent = value;
}

export function setAttr(element, name, value) {
  const text = String(value);
  if (element.getAttribute(name) !== text) element.setAttribute(name, text);
}

/** Calls each view's render() at most once per animation frame. */
export class FrameScheduler {
  #dirty = new Set();
  #frame = null;
  #timer = null;

  mark(view) {
    this.#dirty.add(view);
    if (this.#frame !== null) return;
    this.#frame = requestAnimationFrame(() => this.flush());
    // Hidden tabs get no animation frames; still show progress now and then.
    this.#timer = setTimeout(() => this.flush(), 250);
  }

  flush() {
    cancelAnimationFrame(this.#frame);
    clearTimeout(this.#timer);
    this.#frame = null;
    this.#timer = null;
    const views = [...this.#dirty];
    this.#dirty.clear();
    for (const view of views) view.render();
  }
}
