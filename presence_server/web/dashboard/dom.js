// Building DOM nodes without innerHTML: every string becomes a text node (or
// an attribute value), so identities, status texts and phone numbers from the
// server can never turn into markup, whatever they contain.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "dataset") for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    else if (key === "testid") el.dataset.testid = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "style") throw new Error("no style attributes: the page's CSP refuses them (use a class)");
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("td", {class: "num", testid: "x"}, "text", otherNode). */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, same arguments as h(). */
export function s(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

/** Replace an element's children, but only when what they show changed: a
 * poll that brings the same data leaves the DOM (and any hover or selection
 * in it) alone. ``key`` is any JSON-able value describing the content. */
export function renderInto(el, key, make) {
  const json = JSON.stringify(key);
  if (el.dataset.renderKey === json) return false;
  el.replaceChildren(...[make()].flat(Infinity).filter(Boolean));
  el.dataset.renderKey = json;
  return true;
}

export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page lacks #${id}`);
  return el;
}
