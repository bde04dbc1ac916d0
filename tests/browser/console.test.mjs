// The console in a real browser: the real server (the binary named by
// ORDO_BIN, else target/debug/ordo) with the demo, driven in Debian's
// headless Chromium. ORDO_SCREENSHOTS=DIR saves a screenshot of every view.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const ROOT = path.resolve(import.meta.dirname, "../..");
const BIN = process.env.ORDO_BIN || path.join(ROOT, "target/debug/ordo");
const SHOTS = process.env.ORDO_SCREENSHOTS;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const servers = [];
let browser;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts `ordo` with the demo on a fresh data directory. */
async function startServer(name, args = [], config = "") {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ordo-browser-${name}-`));
  const port = await freePort();
  const configFile = path.join(dir, "ordo.toml");
  fs.writeFileSync(configFile, config);
  const child = spawn(BIN, ["--data-dir", path.join(dir, "data"), "--listen", `127.0.0.1:${port}`,
    "--config", configFile, "--log-format", "pretty", ...args], {
    env: { ...process.env, RUST_LOG: "warn" }, stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  child.stdout.on("data", (d) => { log += d; });
  child.stderr.on("data", (d) => { log += d; });
  const server = { name, child, dir, base: `http://127.0.0.1:${port}`, log: () => log };
  servers.push(server);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited: ${log}`);
    try {
      const r = await fetch(`${server.base}/health/ready`);
      if (r.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`${name} did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  server.creds = JSON.parse(fs.readFileSync(path.join(dir, "data", "demo-credentials.json")));
  return server;
}

async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(server, role, creds = server.creds[role]) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${server.base}/`);
  await page.fill("#client_id", creds.client_id);
  await page.fill("#client_secret", creds.client_secret);
  await Promise.all([page.waitForLoadState("load"), page.click("form[action='/sign-in'] button[type=submit]")]);
  assert.ok(!page.url().endsWith("/sign-in"), `${role} is signed in (at ${page.url()})`);
  return page;
}

/** A bearer token of a demo client, for API calls beside the browser. */
async function token(server, creds) {
  const r = await fetch(`${server.base}/oauth/token`, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: creds.client_id, client_secret: creds.client_secret }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).access_token;
}

async function api(server, bearer, method, url, body) {
  const r = await fetch(`${server.base}${url}`, {
    method,
    headers: { Authorization: `Bearer ${bearer}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

const ADDRESS = { name: "Grace Hopper", line1: "Main St 1", city: "Arlington", postal_code: "22201", country: "US" };

let demo;
let quiet;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--no-first-run", "--disable-sync", "--disable-quic"],
  });
  // The demo with a fast courier, and bus retries short enough that a
  // failing payment is dead-lettered within seconds.
  demo = await startServer("demo", ["--courier-sim", "250ms"],
    'bus-max-attempts = 2\nbus-retry-base = "50ms"\nbus-retry-max = "200ms"\n');
  // No courier simulator: shipments wait for a courier.
  quiet = await startServer("quiet", ["--courier-sim", "off"]);
});

after(async () => {
  if (browser) await browser.close();
  for (const s of servers) {
    s.child.kill("SIGTERM");
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
});

test("a customer places an order in the shop and watches it reach delivered without a reload", async () => {
  const page = await signIn(demo, "customer");
  assert.match(page.url(), /\/shop$/);
  await shot(page, "customer-shop");
  // Two products ordered together.
  await page.locator(".product").nth(0).locator("input[name=quantity]").fill("2");
  await page.locator(".product").nth(1).locator("input[name=quantity]").fill("1");
  await Promise.all([page.waitForURL(/\/shop\/checkout/), page.click(".checkout-bar button[type=submit]")]);
  assert.equal(await page.locator("form[action='/shop/checkout'] input[name=product]").count(), 2);
  await page.fill("#name", "Ada Lovelace");
  await page.fill("#line1", "Unter den Linden 1");
  await page.fill("#postal_code", "10117");
  await page.fill("#city", "Berlin");
  await page.fill("#country", "DE");
  await shot(page, "customer-checkout");
  await Promise.all([page.waitForURL(/\/orders\/ord_/), page.click("form[action='/shop/checkout'] button[type=submit]")]);
  const orderUrl = page.url();
  // Marks this document: a reload would lose it.
  await page.evaluate(() => { window.__sameDocument = true; });
  await page.waitForSelector("#order-live .badge.ok:text('delivered')", { timeout: 60_000 });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
  assert.equal(page.url(), orderUrl);
  assert.equal(await page.locator("#order-live .stepper li.done").count(), 5);
  await page.waitForSelector("#order-live .timeline li:has-text('Order delivered')");
  assert.equal(await page.locator("#order-live section.card:has(h2:text('Items')) tbody tr").count(), 2);
  await shot(page, "customer-order-delivered");
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(page, "customer-order-phone");

  // My orders lists it.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`${demo.base}/orders`);
  const id = orderUrl.split("/orders/")[1].split("?")[0];
  assert.equal(await page.locator(`a[href='/orders/${id}']`).count(), 1);
  await shot(page, "customer-orders");

  // The tracking link works signed out, and not once tampered with.
  await page.goto(orderUrl);
  const link = await page.locator("a[href^='/track/']").getAttribute("href");
  const anonymous = await (await browser.newContext()).newPage();
  const ok = await anonymous.goto(`${demo.base}${link}`);
  assert.equal(ok.status(), 200);
  const text = await anonymous.locator("main").innerText();
  assert.match(text, /Berlin/);
  assert.doesNotMatch(text, /Ada Lovelace|Unter den Linden/, "no personal data beyond the city");
  await shot(anonymous, "tracking");
  const tampered = link.replace(/.$/, (c) => (c === "A" ? "B" : "A"));
  assert.equal((await anonymous.goto(`${demo.base}${tampered}`)).status(), 404);
  await page.context().close();
});

test("a customer's session is refused the admin overview and another customer's order", async () => {
  const admin = await token(demo, demo.creds.admin);
  const other = await api(demo, admin, "POST", "/v1/admin/clients", { role: "customer", name: "other shopper" });
  assert.equal(other.status, 201);
  const otherToken = await token(demo, { client_id: other.body.client_id, client_secret: other.body.client_secret });
  const products = await api(demo, otherToken, "GET", "/v1/products");
  const theirs = await api(demo, otherToken, "POST", "/v1/orders", {
    items: [{ product_id: products.body.items[0].id, quantity: 1 }], shipping_address: ADDRESS, payment: { token: "tok_visa" },
  });
  assert.equal(theirs.status, 201);

  const page = await signIn(demo, "customer");
  const adminPage = await page.goto(`${demo.base}/admin`);
  assert.ok([403, 404].includes(adminPage.status()), `admin overview refused (${adminPage.status()})`);
  const foreign = await page.goto(`${demo.base}/orders/${theirs.body.id}`);
  assert.equal(foreign.status(), 404);
  await shot(page, "error-not-found");
  // The API's event stream takes the session cookie, with the same scoping.
  const stream = await page.request.get(`${demo.base}/v1/orders/${theirs.body.id}/events`);
  assert.equal(stream.status(), 404);
  await page.context().close();
});

test("a form posted without its CSRF token is refused", async () => {
  const page = await signIn(demo, "customer");
  const mine = await page.request.get(`${demo.base}/orders`);
  assert.equal(mine.status(), 200);
  const products = await api(demo, await token(demo, demo.creds.customer), "GET", "/v1/products");
  const form = { product: products.body.items[0].id, quantity: "1", name: "A", line1: "B", city: "C",
    postal_code: "1", country: "DE", card: "tok_visa", idempotency_key: "csrf-test" };
  const refused = await page.request.post(`${demo.base}/shop/checkout`, { form });
  assert.equal(refused.status(), 403);
  const wrong = await page.request.post(`${demo.base}/shop/checkout`, { form: { ...form, csrf: "forged" } });
  assert.equal(wrong.status(), 403);
  // Nothing was ordered.
  const list = await api(demo, await token(demo, demo.creds.customer), "GET", "/v1/orders?limit=200");
  assert.ok(!list.body.items.some((o) => o.shipping_address.name === "A"));
  // Signing out ends the session server-side: the old cookie opens nothing.
  const cookies = await page.context().cookies();
  await page.goto(`${demo.base}/orders`);
  await page.click("form[action='/sign-out'] button");
  await page.waitForURL(/signed_out/);
  const replay = await browser.newContext();
  await replay.addCookies(cookies);
  const after = await (await replay.newPage()).goto(`${demo.base}/orders`);
  assert.match(after.url(), /\/\?next=/, "redirected to sign in");
  await page.context().close();
  await replay.close();
});

test("a seller sees only its lines, restocks a product and sees the new availability", async () => {
  const admin = await token(demo, demo.creds.admin);
  // A second seller with a product, and an order holding both sellers' lines.
  const other = await api(demo, admin, "POST", "/v1/admin/clients", { role: "seller", name: "other seller" });
  const otherSeller = await token(demo, { client_id: other.body.client_id, client_secret: other.body.client_secret });
  const created = await api(demo, otherSeller, "POST", "/v1/products", {
    sku: "OTHER-1", name: "Other seller's lamp", price: "70.00", currency: "EUR", initial_stock: 5,
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const customer = await token(demo, demo.creds.customer);
  const catalog = await api(demo, customer, "GET", "/v1/products?limit=200");
  const mine = catalog.body.items.find((p) => p.seller_id === demo.creds.seller.client_id);
  const order = await api(demo, customer, "POST", "/v1/orders", {
    items: [{ product_id: mine.id, quantity: 1 }, { product_id: created.body.id, quantity: 1 }],
    shipping_address: ADDRESS, payment: { token: "tok_visa" },
  });
  assert.equal(order.status, 201);

  const page = await signIn(demo, "seller");
  await page.goto(`${demo.base}/orders/${order.body.id}`);
  const body = await page.locator("main").innerText();
  assert.match(body, new RegExp(mine.name));
  assert.doesNotMatch(body, /Other seller's lamp/);
  assert.doesNotMatch(body, new RegExp(order.body.total.replace(".", "\\.")), "not the order's total");
  await shot(page, "seller-order");
  await page.goto(`${demo.base}/seller/orders`);
  await shot(page, "seller-orders");

  await page.goto(`${demo.base}/seller/products`);
  await shot(page, "seller-products");
  await page.goto(`${demo.base}/seller/products/${mine.id}`);
  const before = (await api(demo, customer, "GET", `/v1/products/${mine.id}`)).body.available;
  await page.check("form[action$='/stock'] input[name=reason][value=restock]");
  await page.fill("form[action$='/stock'] input[name=delta]", "7");
  await Promise.all([page.waitForLoadState("load"), page.click("form[action$='/stock'] button[type=submit]")]);
  const now = (await api(demo, customer, "GET", `/v1/products/${mine.id}`)).body.available;
  assert.equal(now, before + 7);
  assert.match(await page.locator("main").innerText(), new RegExp(String(now)));
  await shot(page, "seller-product");
  await page.context().close();
});

test("a courier posts a waypoint from the shipment page", async () => {
  const customer = await token(quiet, quiet.creds.customer);
  const products = await api(quiet, customer, "GET", "/v1/products");
  const order = await api(quiet, customer, "POST", "/v1/orders", {
    items: [{ product_id: products.body.items[0].id, quantity: 1 }], shipping_address: ADDRESS, payment: { token: "tok_visa" },
  });
  assert.equal(order.status, 201);
  let shipment;
  for (let i = 0; i < 100 && !shipment; i++) {
    const r = await api(quiet, customer, "GET", `/v1/orders/${order.body.id}/shipment`);
    if (r.status === 200) shipment = r.body; else await new Promise((res) => setTimeout(res, 100));
  }
  assert.ok(shipment, "a shipment is planned");

  const page = await signIn(quiet, "courier");
  assert.match(page.url(), /\/courier$/);
  assert.equal(await page.locator(`a[href='/courier/shipments/${shipment.id}']`).count(), 1);
  await shot(page, "courier-shipments");
  await page.goto(`${quiet.base}/courier/shipments/${shipment.id}`);
  await Promise.all([page.waitForLoadState("load"),
    page.click("form:has(input[name=type][value=picked_up]) button[type=submit]")]);
  const courier = await token(quiet, quiet.creds.courier);
  assert.equal((await api(quiet, courier, "GET", `/v1/shipments/${shipment.id}`)).body.status, "picked_up");
  await page.waitForSelector("form:has(input[name=type][value=waypoint_reached]), form:has(input[name=type][value=delivered])");
  await shot(page, "courier-shipment");
  await page.context().close();
});

async function until(what, check, timeout = 60_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test("an admin makes the gateway fail, finds the stuck order with its dead letter, replays it and sees it complete", async () => {
  const page = await signIn(demo, "admin");
  assert.match(page.url(), /\/admin$/);
  await shot(page, "admin-overview");

  // Chaos: every charge fails transiently.
  await page.goto(`${demo.base}/admin/chaos`);
  await page.fill("#transient_percent", "100");
  await Promise.all([page.waitForLoadState("load"),
    page.click("form:has(input[name=control][value=gateway]) button[type=submit]")]);
  assert.match(await page.locator(".chaos-banner").innerText(), /transient/i);
  await shot(page, "admin-chaos");
  const metrics = await (await fetch(`${demo.base}/metrics`)).text();
  assert.match(metrics, /ordo_chaos_active\{control="gateway_transient"\} 1/);

  const customer = await token(demo, demo.creds.customer);
  const products = await api(demo, customer, "GET", "/v1/products");
  const order = await api(demo, customer, "POST", "/v1/orders", {
    items: [{ product_id: products.body.items[0].id, quantity: 1 }], shipping_address: ADDRESS, payment: { token: "tok_visa" },
  });
  assert.equal(order.status, 201);
  const id = order.body.id;

  // It is stuck in confirmed, with the payment consumer's dead letter.
  const stuckUrl = `${demo.base}/admin/stuck?confirmed=1s`;
  await until("the order among the stuck orders with a dead letter", async () => {
    await page.goto(stuckUrl);
    const row = page.locator(`tr:has(a[href='/admin/orders/${id}'])`);
    return (await row.count()) === 1 && /dead letter/i.test(await row.innerText());
  });
  await shot(page, "admin-stuck");
  await page.goto(`${demo.base}/admin/dead-letters`);
  await shot(page, "admin-dead-letters");

  // Chaos off; once the gateway's breaker lets calls through, replay.
  await page.goto(`${demo.base}/admin/chaos`);
  await Promise.all([page.waitForLoadState("load"),
    page.click("form:has(input[name=control][value=off]) button[type=submit]")]);
  assert.equal(await page.locator(".chaos-banner").count(), 0);
  await until("the breaker to let calls through", async () => {
    const m = await (await fetch(`${demo.base}/metrics`)).text();
    return !/ordo_payments_gateway_breaker_state 2/.test(m);
  }, 30_000);
  await page.goto(stuckUrl);
  await Promise.all([page.waitForLoadState("load"),
    page.click(`tr:has(a[href='/admin/orders/${id}']) form[action='/admin/stuck/replay'] button`)]);
  await until("the replayed order to be delivered", async () => {
    const r = await api(demo, customer, "GET", `/v1/orders/${id}`);
    return r.body.status === "delivered";
  });

  // Its four services side by side.
  await page.goto(`${demo.base}/admin/orders/${id}`);
  const view = await page.locator("main").innerText();
  assert.match(view, /delivered/);
  assert.match(view, /captured/);
  await shot(page, "admin-order");
  await page.goto(`${demo.base}/admin/orders`);
  await shot(page, "admin-orders");
  await page.goto(`${demo.base}/admin/clients`);
  await shot(page, "admin-clients");
  await page.goto(`${demo.base}/admin/audit`);
  assert.match(await page.locator("main").innerText(), /chaos/i, "chaos changes are audited");
  await shot(page, "admin-audit");
  await page.goto(`${demo.base}/admin`);
  await shot(page, "admin-overview");
  await page.context().close();
});
