// The storefront: places an order through the JSON API, then opens its page.
// Its sentences are the page's translated texts (pageTexts).
import {
  el, fill, pageTexts, request,
} from "./live.js";

const TEXTS = pageTexts();

const form = document.querySelector('[data-role="order-form"]');
const items = form.querySelector('[data-role="items"]');
const statusLine = form.querySelector('[data-role="form-status"]');
const errors = form.querySelector('[data-role="form-errors"]');
const submit = form.querySelector('[data-role="submit"]');
const simulate = form.querySelector('[data-role="simulate"]');
// One key per filled-in form: a double click or a resubmission after a network
// error places one order, not two.
let idempotencyKey = crypto.randomUUID();

form.querySelector('[data-role="add-item"]').addEventListener("click", () => {
  const row = items.querySelector('[data-role="item"]').cloneNode(true);
  for (const input of row.querySelectorAll("input")) input.value = input.name === "quantity" ? "1" : "";
  items.append(row);
  row.querySelector("input").focus();
  idempotencyKey = crypto.randomUUID();
});

items.addEventListener("click", (click) => {
  const remove = click.target.closest('[data-role="remove-item"]');
  if (!remove || items.children.length === 1) return;
  remove.closest('[data-role="item"]').remove();
  idempotencyKey = crypto.randomUUID();
});

form.addEventListener("input", () => {
  idempotencyKey = crypto.randomUUID();
});

function body() {
  const data = {
    customer_email: form.elements.customer_email.value.trim(),
    items: [...items.querySelectorAll('[data-role="item"]')].map((row) => ({
      sku: row.querySelector('[name="sku"]').value.trim(),
      quantity: Number.parseInt(row.querySelector('[name="quantity"]').value, 10),
      unit_price: row.querySelector('[name="unit_price"]').value.trim(),
    })),
  };
  if (simulate) {
    const failTimes = Number.parseInt(simulate.querySelector('[name="fail_times"]').value || "0", 10);
    const delay = Number.parseInt(simulate.querySelector('[name="delay_ms"]').value || "0", 10);
    const listenerFails = simulate.querySelector('[name="listener_fails"]').checked;
    if (failTimes || delay || listenerFails) {
      data.simulate = {
        fail_times: failTimes,
        failure: simulate.querySelector('[name="failure"]').value,
        step: simulate.querySelector('[name="step"]').value,
        delay_ms: delay,
        listener_fails: listenerFails,
      };
    }
  }
  return data;
}

function showErrors(detail, fields) {
  errors.replaceChildren(el("p", {}, detail));
  if (fields) {
    const list = el("ul");
    for (const [field, problem] of Object.entries(fields)) {
      list.append(el("li", {}, el("code", {}, field), `: ${problem}`));
    }
    errors.append(list);
  }
  errors.hidden = false;
}

form.addEventListener("submit", async (submitEvent) => {
  submitEvent.preventDefault();
  errors.hidden = true;
  submit.disabled = true;
  statusLine.textContent = TEXTS.placing;
  const answer = await request(form.dataset.placeUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json", Accept: "application/json", "Idempotency-Key": idempotencyKey,
    },
    body: JSON.stringify(body()),
  });
  if (answer?.response.ok && answer.data?.page_url) {
    statusLine.textContent = TEXTS.placed;
    location.assign(answer.data.page_url);
    return;
  }
  statusLine.textContent = "";
  if (answer === null) {
    // The same key goes with the resubmission: an order that was placed after all is not placed twice.
    showErrors(TEXTS.no_answer);
  } else {
    const reason = answer.data?.detail || fill(TEXTS.server_answered, { status: answer.response.status });
    showErrors(fill(TEXTS.refused, { reason }), answer.data?.fields);
  }
  submit.disabled = false;
});
