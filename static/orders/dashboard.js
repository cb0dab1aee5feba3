// The operators' dashboard: a live feed from the staff stream; counts, chart,
// rates and the failed list refetched (at most every 1.5 s) when events arrive.
import {
  el, eventItem, formatTime, liveStream, localizeTimes, request, showConnection, timeNode,
} from "./live.js";

const root = document.querySelector('[data-role="dashboard"]');
const connection = root.querySelector('[data-role="connection"]');
const feed = root.querySelector('[data-role="feed"]');
const chart = root.querySelector('[data-role="chart"]');
const failedRows = root.querySelector('[data-role="failed-rows"]');
const actionMessage = root.querySelector('[data-role="action-message"]');
// Support (view only) gets no Retry button: the server would refuse it.
const mayRetry = root.dataset.mayRetry === "true";
const statsProblem = root.querySelector('[data-role="stats-problem"]');
const FEED_LIMIT = 50;
// Drawn as orders/pages/views.py chart_geometry() draws it.
const CHART = { width: 600, height: 160, pad: 4 };
const SERIES = ["completed", "failed", "retried"];

function feedItem(event) {
  const link = `/orders/${encodeURIComponent(event.order_id)}`;
  return eventItem(event, el("a", { class: "order-link", href: link }, event.order_id));
}

function addToFeed(event) {
  if (feed.querySelector(`[data-event-id="${CSS.escape(String(event.event_id))}"]`)) return;
  feed.prepend(feedItem(event));
  while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
}

function renderCounts(counts) {
  for (const item of root.querySelectorAll('[data-role="count"]')) {
    const value = counts[item.dataset.status] ?? 0;
    item.querySelector('[data-role="count-value"]').textContent = String(value);
  }
  root.querySelector('[data-role="failed-count"]').textContent = `(${counts.FAILED ?? 0})`;
}

function renderChart(series) {
  const peak = Math.max(1, ...SERIES.flatMap((name) => series[name]));
  const step = (CHART.width - 2 * CHART.pad) / Math.max(1, series.minutes - 1);
  const usable = CHART.height - 2 * CHART.pad;
  const totals = {};
  for (const name of SERIES) {
    const points = series[name]
      .map((value, i) => `${(CHART.pad + i * step).toFixed(1)},${(CHART.height - CHART.pad - (value / peak) * usable).toFixed(1)}`)
      .join(" ");
    chart.querySelector(`polyline[data-series="${name}"]`).setAttribute("points", points);
    totals[name] = series[name].reduce((a, b) => a + b, 0);
    root.querySelector(`[data-role="legend"][data-series="${name}"] [data-role="series-total"]`).textContent = String(totals[name]);
  }
  root.querySelector('[data-role="chart-peak"]').textContent = String(peak);
  root.querySelector('[data-role="chart-desc"]').textContent =
    `${SERIES.map((name) => `${name}: ${totals[name]}`).join(", ")} in the last hour; busiest minute ${peak}.`;
}

function renderRates(rates) {
  root.querySelector('[data-role="retry-rate"]').textContent =
    rates.retry_rate === null ? "–" : `${Math.round(rates.retry_rate * 100)}%`;
  root.querySelector('[data-role="median-complete"]').textContent =
    rates.median_seconds_to_complete === null ? "–" : `${rates.median_seconds_to_complete.toFixed(1)} s`;
}

function failedRow(order) {
  return el(
    "tr",
    { "data-order-id": order.order_id },
    el("td", {}, el("a", { href: order.page_url }, order.order_id)),
    el("td", {}, order.customer_email),
    el("td", { class: "reason" }, order.failure_reason),
    el("td", {}, String(order.attempts)),
    el("td", {}, timeNode(order.updated_at)),
    el(
      "td",
      { class: "actions" },
      ...(mayRetry ? [el("button", {
        type: "button", class: "primary small", "data-role": "retry",
        "data-order-id": order.order_id, "aria-label": `Retry order ${order.order_id}`,
      }, "Retry"), " "] : []),
      el("a", { href: order.admin_url, "data-role": "admin-link" }, "Admin"),
    ),
  );
}

function renderFailed(orders) {
  if (!orders.length) {
    failedRows.replaceChildren(
      el("tr", { "data-role": "no-failed" }, el("td", { colspan: 6, class: "muted" }, "No failed orders.")),
    );
    return;
  }
  failedRows.replaceChildren(...orders.map(failedRow));
}

let refreshTimer = null;
let lastRefresh = 0;

async function refreshStats() {
  refreshTimer = null;
  lastRefresh = Date.now();
  const answer = await request(root.dataset.statsUrl, {
    headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin",
  });
  // The next event or the periodic refresh tries again; until then the page
  // says the numbers are stale, and why.
  if (answer === null || !answer.response.ok) {
    const why = answer === null ? "the server did not answer" : `the server answered ${answer.response.status}`;
    statsProblem.textContent = `The numbers could not be refreshed at ${formatTime(new Date().toISOString())}: ${why}.`;
    statsProblem.hidden = false;
    return;
  }
  statsProblem.hidden = true;
  const stats = answer.data;
  renderCounts(stats.counts);
  renderChart(stats.series);
  renderRates(stats.rates);
  renderFailed(stats.failed_orders);
}

function scheduleRefresh() {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(refreshStats, Math.max(0, 1500 - (Date.now() - lastRefresh)));
}

function showOutcome(text, outcome) {
  actionMessage.textContent = text;
  actionMessage.dataset.outcome = outcome;
  actionMessage.hidden = false;
}

failedRows.addEventListener("click", async (click) => {
  const button = click.target.closest('[data-role="retry"]');
  if (!button) return;
  button.disabled = true;
  const orderId = button.dataset.orderId;
  const answer = await request(`/api/orders/${encodeURIComponent(orderId)}/retry`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRFToken": root.dataset.csrfToken, Accept: "application/json" },
  });
  if (answer === null) {
    showOutcome(`Could not reach the server to retry ${orderId}.`, "error");
    button.disabled = false;
  } else if (answer.response.ok) {
    showOutcome(`Retry requested for ${orderId}.`, "ok");
    button.textContent = "Requested";
  } else {
    showOutcome(`Could not retry ${orderId}: ${answer.data?.detail || `the server answered ${answer.response.status}`}`, "error");
    button.disabled = false;
  }
  scheduleRefresh();
});

liveStream(root.dataset.eventsUrl, {
  onEvent(event) {
    addToFeed(event);
    scheduleRefresh();
  },
  onOpen() {
    showConnection(root, connection, "live", "Live");
    scheduleRefresh(); // catch up on anything missed while disconnected
  },
  onDown(failures) {
    showConnection(root, connection, "polling", `Live feed unavailable; numbers refresh every 30 s (reconnect attempt ${failures}).`);
  },
  onReset() {
    scheduleRefresh();
  },
});

localizeTimes(document);
setInterval(refreshStats, 30000);
