// The review page: the queue of audit and uncertain tags from GET /v1/review, one decision per item
// (POST /v1/products/{id}/decisions), photos through GET /v1/products/{id}/image.
// Plain ES module, no build step; every text from the API goes into the DOM as text, never as HTML.

const KEY = "tagger.reviewKey"; // sessionStorage: the key lives only as long as the tab
// Items per page; ?limit=N on the page's URL changes it (the API allows 1 to 500).
const PAGE = Math.min(500, Math.max(1, Math.floor(Number(new URLSearchParams(location.search).get("limit"))) || 20));

const $ = (id) => document.getElementById(id);
const state = {
  key: sessionStorage.getItem(KEY),
  axis: "",
  items: [], // ReviewItem objects, in queue order
  cursor: null, // next_cursor of the last page loaded (null: no more)
  selected: 0,
  busy: false,
  axes: new Set(),
  images: new Map(), // product_id -> {url, error}: one fetch per product, shared by its axes
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The API's error body as one line: its `detail` names the field or parameter at fault. */
function errorMessage(status, body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) { // FastAPI's own validation errors: [{loc, msg}, ...]
    return `${status}: ` + detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return `${status}: ${detail || "request failed"}`;
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.key}`, ...(options.headers || {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, `network error: ${err.message}`);
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON: keep the status alone */ }
    throw new ApiError(response.status, errorMessage(response.status, body));
  }
  return response;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function notice(message) {
  $("notice").textContent = message;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// --- session ----------------------------------------------------------------------------------

function signedIn(on) {
  $("key-form").hidden = on;
  $("session").hidden = !on;
}

function forgetKey(message) {
  sessionStorage.removeItem(KEY);
  state.key = null;
  state.items = [];
  state.cursor = null;
  for (const entry of state.images.values()) if (entry.url) URL.revokeObjectURL(entry.url);
  state.images.clear();
  render();
  signedIn(false);
  showError(message || "");
  $("key").focus();
}

/** An error from the API: a bad, revoked or wrong-role key sends the reviewer back to the key form. */
function failed(err) {
  if (err.status === 401 || err.status === 403) forgetKey(err.message);
  else showError(err.message);
}

// --- the queue --------------------------------------------------------------------------------

const itemKey = (item) => `${item.product_id}\u0000${item.axis}`;

async function loadPage(reset) {
  if (reset) {
    state.items = [];
    state.cursor = null;
    state.selected = 0;
  }
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (state.axis) params.set("axis", state.axis);
  if (state.cursor) params.set("cursor", state.cursor);
  $("more").disabled = true;
  try {
    const page = await (await api(`v1/review?${params}`)).json();
    const seen = new Set(state.items.map(itemKey));
    for (const item of page.items) {
      if (!seen.has(itemKey(item))) state.items.push(item);
      state.axes.add(item.axis);
    }
    state.cursor = page.next_cursor;
    showError("");
    signedIn(true);
  } catch (err) {
    failed(err);
  } finally {
    $("more").disabled = false;
  }
  render();
}

function renderAxes() {
  const select = $("axis");
  const known = new Set([...select.options].map((o) => o.value));
  for (const axis of [...state.axes].sort()) {
    if (!known.has(axis)) select.append(el("option", { value: axis, textContent: axis }));
  }
  select.value = state.axis;
}

function candidateRow(item, candidate, n) {
  return el("li", {},
    el("button", { type: "button", className: "confirm", dataset: { value: candidate.value },
                   onclick: () => confirmCandidate(item, n) },
      el("kbd", { textContent: String(n + 1) }), " Confirm ", el("b", { textContent: candidate.value })),
    el("meter", { min: 0, max: 1, value: candidate.score, title: "model score" }),
    el("span", { className: "score", textContent: candidate.score.toFixed(2) }));
}

/** Audit items: a tag the model applied (sampled) or would have applied (its value switched off). */
function auditBadge(item) {
  if (!item.audit) return null;
  const paused = item.candidates.some((c) => c.reason === "paused");
  return el("span", {
    className: "badge", textContent: paused ? "audit · paused" : "audit",
    title: paused ? "The model would have applied this value, but the live audit switched it off; "
                    + "confirmations bring it back."
                  : "The model applied this tag; a sample is checked by people to measure its live precision.",
  });
}

/** Why the model proposed these values: how much it leaned on title vs photo, and — when the two
 *  alone name different values — what each would have said (a disagreement sends the axis here). */
function evidenceNote(item) {
  const ev = item.evidence;
  if (!ev) return null;
  const parts = [];
  if (ev.shares) {
    const pct = (x) => `${Math.round(100 * x)}%`;
    parts.push(el("span", { className: "shares", textContent:
      `title ${pct(ev.shares.title ?? 0)} · photo ${pct(ev.shares.photo ?? 0)}` }));
  }
  const t = ev.title_only, p = ev.photo_only;
  if (t && p && t.value !== p.value) {
    parts.push(el("span", { className: "disagree", textContent:
      ` — title alone: ${t.value} (${t.score.toFixed(2)}), photo alone: ${p.value} (${p.score.toFixed(2)})` }));
  }
  return parts.length ? el("p", { className: "evidence" }, ...parts) : null;
}

function card(item, index) {
  const others = item.candidates.slice(1).map((c) => el("option", { value: c.value }));
  const listId = `values-${index}`;
  const input = el("input", { className: "value", placeholder: "the right value", required: true,
                              autocomplete: "off", "aria-label": "the right value" });
  input.setAttribute("list", listId);
  const form = el("form", { className: "correct-form", hidden: true },
    input, el("datalist", { id: listId }, ...others),
    el("button", { type: "submit", textContent: "Save correction" }),
    el("button", { type: "button", textContent: "Cancel", onclick: () => closeCorrection(form) }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    correct(item, input.value);
  });
  const img = el("img", { alt: `photo of ${item.title}` });
  const node = el("article", {
    className: "item", tabIndex: -1, dataset: { product: item.product_id, axis: item.axis },
    onclick: () => select(state.items.indexOf(item), false),
  },
    el("div", { className: "photo" }, img, el("span", { className: "photo-note" })),
    el("div", { className: "body" },
      el("h2", { className: "title", textContent: item.title }),
      el("p", { className: "meta" },
        el("span", { className: "axis", textContent: item.axis }), " · ",
        el("code", { className: "product", textContent: item.product_id }),
        item.model_version ? ` · model ${item.model_version}` : null, auditBadge(item)),
      evidenceNote(item),
      el("ol", { className: "candidates" }, ...item.candidates.map((c, n) => candidateRow(item, c, n))),
      el("div", { className: "actions" },
        el("button", { type: "button", className: "reject", onclick: () => reject(item) },
          el("kbd", { textContent: "r" }), " Reject all"),
        el("button", { type: "button", className: "correct", onclick: () => openCorrection(item) },
          el("kbd", { textContent: "c" }), " Correct…")),
      form));
  showImage(node, item.product_id);
  return node;
}

function render() {
  const list = $("items");
  list.replaceChildren(...state.items.map(card));
  state.selected = Math.max(0, Math.min(state.selected, state.items.length - 1));
  select(state.selected, false);
  renderAxes();
  const more = state.cursor !== null;
  $("more").hidden = !more || !state.key;
  $("empty").hidden = !state.key || state.items.length > 0 || more;
  $("count").textContent = state.key ? `${state.items.length} loaded${more ? ", more to come" : ""}` : "";
}

function cards() {
  return [...$("items").children];
}

function select(index, scroll = true) {
  if (index < 0 || index >= state.items.length) return;
  state.selected = index;
  cards().forEach((node, i) => node.classList.toggle("selected", i === index));
  const node = cards()[index];
  if (scroll && node) node.scrollIntoView({ block: "nearest" });
}

// --- photos -----------------------------------------------------------------------------------

/** Fetch the photo with the key (an <img src> cannot send one) and show it as a blob: URL. */
async function showImage(node, productId) {
  const item = state.items.find((i) => i.product_id === productId);
  const note = node.querySelector(".photo-note");
  if (!item || !item.image_uri) {
    note.textContent = "no photo";
    return;
  }
  let entry = state.images.get(productId);
  if (!entry) {
    entry = { url: null, error: null, pending: null };
    state.images.set(productId, entry);
    entry.pending = api(`v1/products/${encodeURIComponent(productId)}/image`)
      .then(async (response) => { entry.url = URL.createObjectURL(await response.blob()); })
      .catch((err) => { entry.error = err.message; });
  }
  await entry.pending;
  // The card may have been redrawn meanwhile: update whichever cards show this product now.
  for (const current of cards().filter((c) => c.dataset.product === productId)) {
    const img = current.querySelector("img");
    if (entry.url) img.src = entry.url;
    else current.querySelector(".photo-note").textContent = `photo unavailable: ${entry.error}`;
  }
}

function dropUnusedImages() {
  const used = new Set(state.items.map((i) => i.product_id));
  for (const [productId, entry] of state.images) {
    if (!used.has(productId) && entry.url) {
      URL.revokeObjectURL(entry.url);
      state.images.delete(productId);
    }
  }
}

// --- decisions --------------------------------------------------------------------------------

async function decide(item, decisions, done) {
  if (state.busy) return;
  state.busy = true;
  const node = cards()[state.items.indexOf(item)];
  if (node) node.classList.add("busy");
  try {
    await api(`v1/products/${encodeURIComponent(item.product_id)}/decisions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ decisions }),
    });
    const index = state.items.indexOf(item);
    state.items.splice(index, 1);
    state.selected = Math.min(index, state.items.length - 1);
    dropUnusedImages();
    showError("");
    notice(`${item.product_id} · ${item.axis}: ${done}`);
    render();
    if (state.items.length === 0 && state.cursor !== null) await loadPage(false);
  } catch (err) {
    if (node) node.classList.remove("busy");
    failed(err);
  } finally {
    state.busy = false;
  }
}

function confirmCandidate(item, n) {
  const candidate = item.candidates[n];
  if (!candidate) return;
  decide(item, [{ axis: item.axis, action: "confirm", value: candidate.value }],
         `confirmed ${candidate.value}`);
}

function reject(item) {
  if (item.candidates.length === 0) return;
  decide(item, item.candidates.map((c) => ({ axis: item.axis, action: "reject", value: c.value })),
         `rejected ${item.candidates.map((c) => c.value).join(", ")}`);
}

function openCorrection(item) {
  const node = cards()[state.items.indexOf(item)];
  if (!node) return;
  select(state.items.indexOf(item));
  const form = node.querySelector(".correct-form");
  form.hidden = false;
  form.querySelector("input").focus();
}

function closeCorrection(form) {
  form.hidden = true;
  form.closest(".item").focus();
}

function correct(item, typed) {
  const value = typed.trim();
  const top = item.candidates[0];
  if (!value) {
    showError("type the right value first");
    return;
  }
  if (!top || value === top.value) { // the "correction" is the model's own best guess: a confirmation
    decide(item, [{ axis: item.axis, action: "confirm", value }], `confirmed ${value}`);
    return;
  }
  decide(item, [{ axis: item.axis, action: "correct", value: top.value, corrected_value: value }],
         `corrected ${top.value} → ${value}`);
}

// --- keys -------------------------------------------------------------------------------------

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || !state.key) return;
  const target = event.target;
  if (target.closest && target.closest("input, select, textarea")) {
    const form = target.closest(".correct-form");
    if (event.key === "Escape" && form) closeCorrection(form);
    return;
  }
  const item = state.items[state.selected];
  if (!item) return;
  if (/^[1-9]$/.test(event.key)) confirmCandidate(item, Number(event.key) - 1);
  else if (event.key === "r") reject(item);
  else if (event.key === "c") openCorrection(item);
  else if (event.key === "j" || event.key === "ArrowDown") select(state.selected + 1);
  else if (event.key === "k" || event.key === "ArrowUp") select(state.selected - 1);
  else return;
  event.preventDefault();
}

// --- start ------------------------------------------------------------------------------------

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  state.key = key;
  sessionStorage.setItem(KEY, key);
  $("key").value = "";
  loadPage(true);
});
$("sign-out").addEventListener("click", () => forgetKey(""));
$("axis").addEventListener("change", (event) => {
  state.axis = event.target.value;
  loadPage(true);
});
$("more").addEventListener("click", () => loadPage(false));
document.addEventListener("keydown", onKey);

if (state.key) loadPage(true);
else signedIn(false);
