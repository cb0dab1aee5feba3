// The order page: keeps status, attempt, countdown, failure reason and timeline
// current over the order's SSE stream, and polls the status endpoint while the
// stream is down. Page state is mirrored in data- attributes for tests.
import {
  STATUS_LABELS, el, eventItem, liveStream, localizeTimes, showConnection, statusPoller,
} from "./live.js";

const root = document.querySelector('[data-role="order"]');
const badge = root.querySelector('[data-role="status"]');
const attemptNode = root.querySelector('[data-role="attempt"]');
const maxAttemptsNode = root.querySelector('[data-role="max-attempts"]');
const countdownRow = root.querySelector('[data-role="countdown-row"]');
const countdown = root.querySelector('[data-role="countdown"]');
const failureBox = root.querySelector('[data-role="failure-box"]');
const failureReason = root.querySelector('[data-role="failure-reason"]');
const connection = root.querySelector('[data-role="connection"]');
const timeline = document.querySelector('[data-role="timeline"]');
const stepList = root.querySelector('[data-role="steps"]');

function setStatus(status) {
  root.dataset.status = status;
  badge.dataset.status = status;
  badge.className = `badge badge-${status.toLowerCase()}`;
  const label = STATUS_LABELS[status] || status;
  badge.textContent = label;
  badge.setAttribute("aria-label", `Status: ${label}`);
  countdownRow.hidden = status !== "RETRYING";
  if (status !== "FAILED") failureBox.hidden = true;
}

function setAttempt(attempt, maxAttempts) {
  root.dataset.attempt = String(attempt);
  attemptNode.textContent = String(attempt);
  if (maxAttempts !== undefined) {
    root.dataset.maxAttempts = String(maxAttempts);
    maxAttemptsNode.textContent = String(maxAttempts);
  }
}

function setFailure(reason) {
  failureReason.textContent = reason || "";
  failureBox.hidden = !reason;
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
  countdown.textContent = remaining > 0.05 ? `in ${remaining.toFixed(1)} s` : "due now";
}

/** Mark a step done (with what it produced, once known) or pending. */
function setStep(name, state, reference) {
  const item = stepList.querySelector(`[data-step="${CSS.escape(name)}"]`);
  if (!item) return;
  item.dataset.state = state;
  const label = item.querySelector('[data-role="step-state"]');
  if (state !== "done") {
    label.replaceChildren("pending");
  } else if (reference) {
    label.replaceChildren("done · ", el("code", {}, reference));
  } else if (label.textContent === "pending") {
    label.replaceChildren("done");
  }
}

function hasEvent(id) {
  return timeline.querySelector(`[data-event-id="${CSS.escape(String(id))}"]`) !== null;
}

function timelineItem(event) {
  const attempt = event.attempt ? ` · attempt ${event.attempt}` : "";
  return eventItem(event, el("span", { class: "muted" }, `· ${event.status}${attempt}`));
}

/** Add an event to the timeline (once) and move the page's state on. */
function applyEvent(event) {
  if (hasEvent(event.event_id)) return;
  // Events arrive in id order; a late one from the poll is put in its place.
  const later = [...timeline.children].find(
    (item) => Number(item.dataset.eventId) > Number(event.event_id),
  );
  timeline.insertBefore(timelineItem(event), later || null);
  if (Number(event.event_id) < Number(root.dataset.lastEventId || 0)) return;
  root.dataset.lastEventId = String(event.event_id);
  setStatus(event.status);
  setAttempt(event.attempt);
  setNextAttempt(event.next_attempt_at);
  if (event.type === "order.failed") setFailure(event.detail);
  if (event.type === "order.step_completed" && event.step) {
    setStep(event.step, "done");
    poller.fetchNow(); // the document has the step's reference
  }
  if (event.type === "order.retry_requested") {
    setFailure("");
    poller.fetchNow(); // max_attempts may have changed
  }
}

/** The status document is the whole truth: take all of it. */
function applyDocument(documentData) {
  for (const event of documentData.events || []) applyEvent(event);
  setStatus(documentData.status);
  setAttempt(documentData.attempts, documentData.max_attempts);
  setNextAttempt(documentData.next_attempt_at);
  setFailure(documentData.status === "FAILED" ? documentData.failure_reason : "");
  for (const step of documentData.steps || []) setStep(step.name, step.state, step.reference);
  const last = (documentData.events || []).at(-1);
  if (last) stream.advanceTo(last.event_id);
}

const poller = statusPoller(root.dataset.statusUrl, applyDocument);

const stream = liveStream(root.dataset.eventsUrl, {
  lastEventId: root.dataset.lastEventId || null,
  onEvent: applyEvent,
  onOpen() {
    poller.stop();
    showConnection(root, connection, "live", "Live: this page updates by itself.");
  },
  onDown(failures) {
    poller.start();
    showConnection(
      root, connection, "polling",
      `Live updates are unavailable; checking for changes every 3 s (reconnect attempt ${failures}).`,
    );
  },
  onReset() {
    // Events this page has not seen are no longer kept: start the timeline over
    // from the status document; the stream replays what is kept after this.
    timeline.replaceChildren();
    root.dataset.lastEventId = "0";
    poller.fetchNow();
  },
});

localizeTimes(document);
setInterval(tick, 200);
tick();
