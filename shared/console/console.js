// l5py admin consoles: the helpers every page shares (no build step, no dependencies).
//
// L5.$(id)                         the element with that id
// L5.el(tag, attrs, ...children)   build a DOM node (strings become text, never HTML)
// L5.call(method, url, opts)       same-origin fetch -> {status, ok, headers, text, json}
// L5.debounce(fn, ms)              run fn once input has been quiet for ms
// L5.delegation(node)              a delegate tree (/api/1/delegate, /delegator.json) as lists
// L5.bound(node)                   a bound tree (/api/1/bind, the dry run's names) as lists
// L5.problem(response)             an error answer as a <pre>, keeping the API's caret diagram
// L5.dtabLines(dentries)           namerd's JSON dtab as text, one dentry per line
"use strict";

const L5 = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Writes carry a non-simple Content-Type (application/dtab or JSON): with same-origin
  // fetches that is what the servers' cross-origin guards let through.
  async function call(method, url, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    let body = opts.body;
    if (body !== undefined && typeof body !== "string") {
      body = JSON.stringify(body);
      headers["Content-Type"] = headers["Content-Type"] || "application/json";
    } else if (body !== undefined) {
      headers["Content-Type"] = headers["Content-Type"] || opts.type || "application/dtab";
    }
    let r;
    try {
      r = await fetch(url, {method, headers, body, cache: "no-store",
                            credentials: "same-origin"});
    } catch (err) {
      return {status: 0, ok: false, headers: new Headers(), json: null,
              text: `cannot reach the server: ${err}`};
    }
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
    return {status: r.status, ok: r.ok, headers: r.headers, text, json};
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  function problem(r) {
    const head = r.status ? `HTTP ${r.status}\n` : "";
    const text = (r.json && r.json.error) ? r.json.error : r.text;
    return el("pre", {class: "caret err"}, head + (text || "(no body)").replace(/\n+$/, ""));
  }

  function addrList(addr) {
    if (!addr) return null;
    if (addr.type === "bound") {
      if (!addr.addrs.length) return el("span", {class: "warn"}, "bound, no addresses");
      return el("ul", {class: "addrs"}, addr.addrs.map((a) => {
        const meta = Object.entries(a.meta || {}).map(([k, v]) => `${k}=${v}`).join(" ");
        return el("li", {}, `${a.ip}:${a.port}`, meta ? el("span", {class: "muted"}, ` ${meta}`)
                                                       : null);
      }));
    }
    if (addr.type === "failed") return el("span", {class: "err"}, `address failed: ${addr.cause}`);
    if (addr.type === "pending") return el("span", {class: "warn"}, "address pending");
    return el("span", {class: "err"}, "address: neg (no such service)");
  }

  // Is this subtree negative, as a binder sees it (an alt skips it and tries the next)?
  function negative(n) {
    switch (n.type) {
      case "neg": return true;
      case "delegate": return negative(n.delegate);
      case "transformation": return negative(n.tree);
      case "alt": return n.alt.every(negative);
      case "union": return n.union.every((w) => negative(w.tree));
      case "leaf": return !!(n.bound && n.bound.addr && n.bound.addr.type === "neg");
      default: return false;
    }
  }

  const KIND_TEXT = {
    delegate: "rewrite", alt: "alt", union: "union", leaf: "leaf", neg: "neg", fail: "fail",
    empty: "empty", exception: "error", transformation: "transform",
  };

  function head(n, extra) {
    const parts = [el("span", {class: "kind"}, KIND_TEXT[n.type] || n.type)];
    if (extra) parts.push(extra);
    if (n.path !== undefined) parts.push(el("code", {class: "path"}, n.path));
    if (n.dentry) {
      parts.push(el("span", {class: "dentry"}, "by ",
        el("code", {}, `${n.dentry.prefix} => ${n.dentry.dst}`)));
    }
    if (n.type === "leaf" && n.bound) {
      parts.push(el("span", {}, "bound ", el("code", {}, n.bound.id),
        n.bound.path && n.bound.path !== "/" ? el("span", {class: "muted"},
          ` residual ${n.bound.path}`) : null));
    }
    if (n.type === "exception") parts.push(el("span", {class: "err"}, n.message));
    if (n.type === "transformation") parts.push(el("span", {}, `by ${n.name}`));
    if (n.type === "neg") parts.push(el("span", {class: "muted"}, "no match: falls through"));
    if (n.type === "fail") parts.push(el("span", {class: "err"}, "fails the request"));
    return el("span", {class: "node"}, parts);
  }

  function children(n) {
    switch (n.type) {
      case "delegate": return [[n.delegate, null]];
      case "transformation": return [[n.tree, null]];
      case "alt": {
        // The first branch that is not negative is the one traffic takes; the rest are
        // fallbacks that are not used while it stands.
        const taken = n.alt.findIndex((t) => !negative(t));
        return n.alt.map((t, i) => [t, {
          label: i === 0 ? "first choice" : `fallback ${i}`,
          cls: i === taken ? "chosen" : (i < taken || taken < 0 ? "skipped" : "unused"),
          note: i === taken ? "used" : (i < taken || taken < 0 ? "negative, skipped" : "not used"),
        }]);
      }
      case "union": {
        const total = n.union.reduce((s, w) => s + w.weight, 0) || 1;
        return n.union.map((w) => [w.tree, {
          label: `weight ${w.weight} (${Math.round(100 * w.weight / total)}%)`, cls: "chosen",
        }]);
      }
      default: return [];
    }
  }

  function item(n, how) {
    const choice = how ? el("span", {class: "choice"}, how.label,
      how.note ? ` · ${how.note}` : "") : null;
    const li = el("li", {class: `k-${n.type} ${how ? how.cls : ""}`}, head(n, choice));
    if (n.type === "leaf" && n.bound) li.append(addrList(n.bound.addr) || "");
    const kids = children(n);
    if (kids.length) li.append(el("ul", {}, kids.map(([t, h]) => item(t, h))));
    return li;
  }

  function delegation(root) {
    return el("ul", {class: "tree"}, item(root, null));
  }

  // A bound tree has no paths or dentries; the same drawing works on it.
  function bound(root) {
    return delegation(root);
  }

  function summary(n) {
    // One line per bound tree, for tables: the ids it reaches.
    switch (n.type) {
      case "leaf": return n.bound ? n.bound.id : "leaf";
      case "alt": return n.alt.map(summary).join(" | ");
      case "union": return n.union.map((w) => `${w.weight} * ${summary(w.tree)}`).join(" & ");
      case "exception": return `error: ${n.message}`;
      case "delegate": return summary(n.delegate);
      default: return n.type;
    }
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      for (const one of Array.isArray(v) ? v : [v]) {
        if (one !== undefined && one !== null && one !== "") q.append(k, one);
      }
    }
    return q.toString();
  }

  // A dtab as namerd's JSON (a list of {prefix, dst}), one dentry per line.
  function dtabLines(dentries) {
    return dentries.map((d) => `${d.prefix} => ${d.dst};`).join("\n");
  }

  const $ = (id) => document.getElementById(id);

  return {$, el, call, debounce, problem, delegation, bound, summary, negative, query, dtabLines};
})();
