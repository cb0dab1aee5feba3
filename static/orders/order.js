// The order page: keeps its status, its sentence for the customer, the countdown
// to the next try, the failure and the timeline current over the order's SSE
// stream, and polls the status endpoint while the stream is down. The words are
// the server's (each event's `message`, in the page's language) or the page's
// translated texts (pageTexts); page state is mirrored in data- attributes for
// tests. A failed order offers to place the same items again.
import {
  el, fill, liveStream, localizeTimes, pageTexts, request, showConnection, statusPoller,
  timeNode,
} from "./live.js";

const TEXTS = pageTexts();
const SAME_ORDER = JSON.parse(document.getElementById("same-order").textContent);

const root = document.querySelector('[data-role="order"]');
const badge = root.querySelector('[data-role="status"]');
const message = root.querySelector('[data-role="message"]');
const countdownRow = root.querySelector('[data-role="countdown-row"]');
const countdown = root.querySelector('[data-role="countdown"]');
const failureBox = root.querySelector('[data-role="failure-box"]');
const placeAgain = root.querySelector('[data-role="place-again"]');
const placeAgainStatus = root.querySelector('[data-role="place-again-status"]');
const connection = root.querySelector('[data-role="connection"]');
const timeline = document.querySelector('[data-role="timeline"]');
const stepList = root.querySelector('[data-role="steps"]');

// The events this page has taken, shown or not (a failed attempt is told by
// the retry or the failure that follows it).
const seen = new Set(
  [...timeline.querySelectorAll("[data-event-id]")].map((item) => item.dataset.eventId),
);

function setStatus(status) {
  root.dataset.status = status;
  message.dataset.status = status;
  badge.dataset.status = status;
  badge.className = `badge badge-${status.toLowerCase()}`;
  badge.textContent = TEXTS.statuses[status] || status;
  countdownRow.hidden = status !== "RETRYING";
  // A failed order: what the customer can do (the sentence above says why).
  failureBox.hidden = status !== "FAILED";
}

function setMessage(text) {
  if (text) message.textContent = text;
}

function setAttempt(attempt, maxAttempts) {
  root.dataset.attempt = String(attempt);
  if (maxAttempts !== undefined) root.dataset.maxAttempts = String(maxAttempts);
}

function setNextAttempt(iso) {
  root.dataset.nextAttemptAt = iso || "";
  tick();
}

function tick() {
  if (root.dataset.status !== "RETRYING" || !root.dataset.nextAttemptAt) {
    countdown.textContent = "";
    return;
  }
  const remaining = (Date.parse(root.dataset.nextAttemptAt) - Date.now()) / 1000;
  countdown.textContent = remaining > 0.05
    ? fill(TEXTS.next_try_in, { seconds: remaining.toFixed(1) })
    : TEXTS.next_try_now;
}

/** Mark a step done or waiting. */
function setStep(name, state) {
  const item = stepList.querySelector(`[data-step="${CSS.escape(name)}"]`);
  if (!item) return;
  item.dataset.state = state;
  item.querySelector('[data-role="step-state"]').textContent = TEXTS.step_states[state] || state;
}

/**
 * Whether the timeline lists the event: the rule of orders/pages/customer.py
 * (shown_on_the_page), for events that arrive live.
 */
function shown(event) {
  if (!event.message) return false;
  if (event.type === "order.attempt_failed") return false;
  return !(event.type === "order.processing" && event.attempt > 1);
}

function timelineItem(event) {
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
    el("span", { class: "event-message", "data-role": "event-message" }, event.message),
  );
}

/** Put the event on the timeline: retries in a row are one line, the latest. */
function addToTimeline(event) {
  if (!shown(event)) return;
  const item = timelineItem(event);
  const later = [...timeline.children].find(
    (each) => Number(each.dataset.eventId) > Number(event.event_id),
  );
  const before = later ? later.previousElementSibling : timeline.lastElementChild;
  if (event.type === "order.retry_scheduled" && before?.dataset.type === "order.retry_scheduled") {
    before.replaceWith(item);
  } else {
    timeline.insertBefore(item, later || null);
  }
}

/** Take an event (once) and move the page's state on. */
function applyEvent(event) {
  const id = String(event.event_id);
  if (seen.has(id)) return;
  seen.add(id);
  addToTimeline(event);
  if (Number(event.event_id) < Number(root.dataset.lastEventId || 0)) return;
  root.dataset.lastEventId = id;
  setStatus(event.status);
  setAttempt(event.attempt);
  setNextAttempt(event.next_attempt_at);
  // What the timeline leaves out, the sentence at the top leaves out too.
  if (shown(event)) setMessage(event.message);
  if (event.type === "order.step_completed" && event.step) setStep(event.step, "done");
  if (event.type === "order.retry_requested") poller.fetchNow(); // max_attempts may have changed
}

/** The status document is the whole truth: take all of it. */
function applyDocument(documentData) {
  for (const event of documentData.events || []) applyEvent(event);
  setStatus(documentData.status);
  setMessage(documentData.message);
  setAttempt(documentData.attempts, documentData.max_attempts);
  setNextAttempt(documentData.next_attempt_at);
  for (const step of documentData.steps || []) setStep(step.name, step.state);
  const last = (documentData.events || []).at(-1);
  if (last) stream.advanceTo(last.event_id);
}

// One key per page: a double click, or a click again after no answer, places
// one order, not two.
const placeKey = crypto.randomUUID();

/** A new order of the same items, with a key of its own, then its page. */
async function placeTheSameOrder() {
  placeAgain.disabled = true;
  placeAgainStatus.textContent = TEXTS.placing;
  const answer = await request(root.dataset.placeUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json", Accept: "application/json", "Idempotency-Key": placeKey,
    },
    body: JSON.stringify(SAME_ORDER),
  });
  if (answer?.response.ok && answer.data?.page_url) {
    placeAgainStatus.textContent = TEXTS.placed;
    location.assign(answer.data.page_url);
    return;
  }
  // No answer: the same key goes with the next click, so an order placed after
  // all is not placed twice.
  placeAgainStatus.textContent = answer === null
    ? TEXTS.no_answer
    : fill(TEXTS.refused, {
      reason: answer.data?.detail || fill(TEXTS.server_answered, { status: answer.response.status }),
    });
  placeAgain.disabled = false;
}

placeAgain.hidden = false;
placeAgain.addEventListener("click", placeTheSameOrder);

const poller = statusPoller(root.dataset.statusUrl, applyDocument);

const stream = liveStream(root.dataset.eventsUrl, {
  lastEventId: root.dataset.lastEventId || null,
  onEvent: applyEvent,
  onOpen() {
    poller.stop();
    showConnection(root, connection, "live", TEXTS.live);
  },
  onDown() {
    poller.start();
    showConnection(root, connection, "polling", TEXTS.polling);
  },
  onReset() {
    // Events this page has not seen are no longer kept: start the timeline over
    // from the status document; the stream replays what is kept after this.
    timeline.replaceChildren();
    seen.clear();
    root.dataset.lastEventId = "0";
    poller.fetchNow();
  },
});

localizeTimes(document);
setInterval(tick, 200);
tick();
