// Shared by the pages: a self-reconnecting SSE client, the status-poll fallback
// and small DOM helpers. Data from the server is only ever set as text
// (textContent), never parsed as HTML.

// Written once, in orders/pages/views.py; base.html renders them into the page.
const LABELS = JSON.parse(document.getElementById("ui-labels").textContent);
export const STATUS_LABELS = LABELS.statuses;
export const EVENT_LABELS = LABELS.events;

export const EVENT_TYPES = Object.keys(EVENT_LABELS);

/** One event as a list item, for the order timeline and the dashboard feed;
 * `extra` nodes (an order link, the status and attempt) go after its label. */
export function eventItem(event, ...extra) {
  return el(
    "li",
    {
      class: `event event-${String(event.status).toLowerCase()}`,
      "data-event-id": event.event_id,
      "data-type": event.type,
      "data-status": event.status,
    },
    timeNode(event.at),
    " ",
    el("span", { class: "event-type" }, EVENT_LABELS[event.type] || event.type),
    " ",
    ...extra,
    event.detail ? el("div", { class: "detail" }, event.detail) : null,
  );
}

/** An element with attributes and text; children are appended as given. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// In the page's language (<html lang>, the language switch's), the reader's
// time zone.
export const PAGE_LANGUAGE = document.documentElement.lang || undefined;
const timeFormat = new Intl.DateTimeFormat(PAGE_LANGUAGE, {
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const dateTimeFormat = new Intl.DateTimeFormat(PAGE_LANGUAGE, {
  dateStyle: "medium", timeStyle: "medium",
});

/** Local, readable time for an ISO instant; today's shown as the time only. */
export function formatTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return iso || "";
  const today = new Date().toDateString() === when.toDateString();
  return (today ? timeFormat : dateTimeFormat).format(when);
}

/** Give every <time datetime> under `root` a local, readable text. */
export function localizeTimes(root = document) {
  for (const node of root.querySelectorAll("time[datetime]")) {
    node.textContent = formatTime(node.getAttribute("datetime"));
    node.title = node.getAttribute("datetime");
  }
}

export function timeNode(iso) {
  return el("time", { datetime: iso, title: iso }, formatTime(iso));
}

/**
 * One SSE stream that keeps itself open: after any error (EventSource gives up
 * for good on a non-200 answer, e.g. a 502 during a deploy) it closes, waits
 * with exponential backoff and jitter, and reopens from the last id it saw
 * (?lastEventId=), so nothing is missed and nothing is sent twice.
 *
 * handlers: onEvent(document, type), onReset(), onOpen(), onDown(attempt).
 */
export function liveStream(url, { lastEventId = null, onEvent, onReset, onOpen, onDown }) {
  let source = null;
  let failures = 0;
  let timer = null;
  let stopped = false;
  let lastId = lastEventId;

  function connect() {
    timer = null;
    const target = new URL(url, location.href);
    if (lastId !== null && lastId !== undefined && lastId !== "") {
      target.searchParams.set("lastEventId", String(lastId));
    }
    source = new EventSource(target);
    source.onopen = () => {
      failures = 0;
      onOpen?.();
    };
    source.onerror = () => {
      source.close();
      source = null;
      if (stopped) return;
      failures += 1;
      onDown?.(failures);
      const delay = Math.min(30000, 1000 * 2 ** (failures - 1));
      timer = setTimeout(connect, delay / 2 + Math.random() * (delay / 2));
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        if (message.lastEventId) lastId = message.lastEventId;
        // The server writes every event's data as JSON: a parse error is a bug.
        onEvent?.(JSON.parse(message.data), type);
      });
    }
    source.addEventListener("stream.reset", () => onReset?.());
  }

  connect();
  return {
    get lastEventId() { return lastId; },
    /** Remember an id learnt elsewhere (the status poll) for the next reconnect. */
    advanceTo(id) {
      if (lastId === null || Number(id) > Number(lastId)) lastId = String(id);
    },
    close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      source?.close();
    },
  };
}

/**
 * One request to the server, read whole: {response, data} (data: the parsed
 * JSON body, or null when the answer is not JSON, such as a proxy's 502 page),
 * or null when no answer came (offline, the server down, the connection cut),
 * which callers report and recover from.
 *
 * Only that failure is caught. The request is built before it (a bad URL or
 * header is our bug and throws), and a JSON answer that does not parse, or any
 * error in what the caller does with the answer, propagates.
 */
export async function request(url, options = {}) {
  const outgoing = new Request(url, options);
  let response;
  let text;
  try {
    response = await fetch(outgoing);
    text = await response.text();
    // eslint-disable-next-line no-restricted-syntax -- the one catch: the network's failure
  } catch (error) {
    // fetch() and reading the body reject with a TypeError exactly when the
    // answer did not (wholly) arrive; anything else is not ours to hide.
    if (!(error instanceof TypeError)) throw error;
    console.warn(`${outgoing.method} ${outgoing.url} got no answer: ${error.message}`);
    return null;
  }
  const type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
  const data = type === "application/json" && text !== "" ? JSON.parse(text) : null;
  return { response, data };
}

/**
 * Strategy 1 of the articles: poll the status document, cheaply (If-None-Match
 * answers 304 while nothing changed). Used while the stream is down.
 */
export function statusPoller(url, onDocument, intervalMs = 3000) {
  let etag = null;
  let timer = null;

  async function poll() {
    const answer = await request(url, {
      headers: etag ? { "If-None-Match": etag, Accept: "application/json" } : { Accept: "application/json" },
      cache: "no-store",
    });
    // No answer (offline, server down): the next tick tries again. A 304 is "unchanged".
    if (answer?.response.status === 200) {
      etag = answer.response.headers.get("ETag");
      onDocument(answer.data);
    }
    if (timer !== null) timer = setTimeout(poll, intervalMs);
  }

  return {
    start() {
      if (timer === null) {
        timer = 0;
        poll();
      }
    },
    stop() {
      if (timer) clearTimeout(timer);
      timer = null;
    },
    get running() { return timer !== null; },
    async fetchNow() {
      etag = null;
      const answer = await request(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      // No answer: the stream's next event, or the poll while it is down, catches up.
      if (answer?.response.ok) {
        etag = answer.response.headers.get("ETag");
        onDocument(answer.data);
      }
    },
  };
}

/**
 * The sentences a customer page's scripts write, translated by the server
 * (orders/pages/customer.py) and rendered into the page as JSON.
 */
export function pageTexts() {
  return JSON.parse(document.getElementById("script-texts").textContent);
}

/** A translated sentence with its %(name)s placeholders filled in. */
export function fill(text, values = {}) {
  return text.replace(/%\((\w+)\)s/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

/** Say how the page is kept current, in words and in data-connection. */
export function showConnection(root, node, mode, text) {
  root.dataset.connection = mode;
  node.dataset.mode = mode;
  node.textContent = text;
}
