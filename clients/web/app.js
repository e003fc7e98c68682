/* Sidecast browser demo: log in at the gateway, hold a sidecast.v1 WebSocket to the edge,
 * draw live prices, place orders and watch their fills arrive in the user's inbox.
 * The page is the UI only: the connection (reconnect, in-band token refresh, resume with
 * since) is the JavaScript client, clients/js/sidecast.js, of which ./sidecast.js is a copy
 * (the gateway serves this directory, GATEWAY_STATIC_DIR, and follows no symbolic link).
 * No framework, no build step. */
import { Sidecast } from "./sidecast.js";

const SYMBOLS = ["BTC", "ETH", "SOL"];
const COLORS = { BTC: "#f2a900", ETH: "#627eea", SOL: "#14b89a" };
const MAX_POINTS = 120;
const SOON_S = 30;             // the expiry shows as "soon" this long before it
const LOG_MAX = 80;

const $ = function (id) { return document.getElementById(id); };
const el = {
  form: $("login-form"), username: $("username"), password: $("password"),
  login: $("login"), logout: $("logout"), userLabel: $("user-label"), error: $("error"),
  status: $("status"), chart: $("chart"), legend: $("legend"), symbol: $("symbol"),
  buy: $("buy"), orders: $("orders"), expiry: $("expiry"), edge: $("edge"), log: $("log")
};

const S = {
  user: null,
  access: null, refresh: null, wsUrl: null,
  accessFresh: false,         // the login's access token, not yet given to the client
  client: null,               // the Sidecast client while logged in
  refreshedFlashUntil: 0,
  series: {}, ticks: 0,
  orders: {}                  // order_id -> <li>
};
SYMBOLS.forEach(function (s) { S.series[s] = []; });

// ---- small helpers ------------------------------------------------------------------------
function now() { return Date.now() / 1000; }
function hhmmss(d) { return (d || new Date()).toTimeString().slice(0, 8); }

function log(text, level) {
  var li = document.createElement("li");
  li.textContent = hhmmss() + "  " + text;
  if (level) li.className = level;
  el.log.insertBefore(li, el.log.firstChild);
  while (el.log.children.length > LOG_MAX) el.log.removeChild(el.log.lastChild);
}

function showError(text) {
  el.error.textContent = text;
  el.error.hidden = !text;
  if (text) log(text, "err");
}

function setStatus(state, text) {
  el.status.dataset.state = state;
  el.status.textContent = text || state;
}

// RFC 6749 §5.2 error bodies, and the gateway's {"error","message"} bodies.
function describeError(status, body) {
  var code = body && body.error;
  var msg = body && (body.error_description || body.message);
  if (code === "invalid_grant" && status === 400)
    return "Wrong username or password" + (msg ? " (" + msg + ")" : "");
  if (status === 401) return "Not authorized" + (msg ? ": " + msg : "") + " — log in again";
  if (status === 403) return "Forbidden" + (msg ? ": " + msg : "");
  if (status === 503) return "Service unavailable" + (msg ? ": " + msg : "");
  if (status === 504) return "Service timed out" + (msg ? ": " + msg : "");
  return "HTTP " + status + (code ? " " + code : "") + (msg ? ": " + msg : "");
}

function postForm(path, fields) {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
    body: new URLSearchParams(fields).toString()
  }).then(readJson);
}

function readJson(r) {
  return r.text().then(function (t) {
    var body = null;
    try { body = t ? JSON.parse(t) : null; } catch (e) { body = { message: t.slice(0, 200) }; }
    return { status: r.status, ok: r.ok, body: body };
  });
}

function takeTokens(body) {
  S.access = body.access_token;
  if (body.refresh_token) S.refresh = body.refresh_token;
  if (body.ws_url) S.wsUrl = body.ws_url;
}

// ---- login / logout -------------------------------------------------------------------------
el.form.addEventListener("submit", function (ev) {
  ev.preventDefault();
  const user = el.username.value.trim(), pass = el.password.value;
  showError("");
  el.login.disabled = true;
  setStatus("connecting", "logging in…");
  postForm("/auth/token", { grant_type: "password", username: user, password: pass })
    .then(function (r) {
      if (!r.ok || !r.body || !r.body.access_token) {
        setStatus("offline", "offline");
        showError(describeError(r.status, r.body));
        return;
      }
      S.user = user;
      takeTokens(r.body);
      S.accessFresh = true;
      log("logged in as " + user + " (token for " + r.body.expires_in + " s)");
      el.userLabel.textContent = "signed in as " + user;
      el.password.value = "";
      el.username.disabled = el.password.disabled = true;
      el.login.hidden = true;
      el.logout.hidden = false;
      el.buy.disabled = false;
      startClient();
    })
    .catch(function (e) {
      setStatus("offline", "offline");
      showError("Cannot reach the gateway: " + e.message);
    })
    .then(function () { el.login.disabled = false; });
});

function endSession(text) {
  if (S.client) S.client.close();
  S.client = null;
  S.access = S.refresh = null;
  S.accessFresh = false;
  el.username.disabled = el.password.disabled = false;
  el.login.hidden = false;
  el.logout.hidden = true;
  el.buy.disabled = true;
  el.userLabel.textContent = "";
  el.edge.textContent = "—";
  if (text) { setStatus("error", "offline"); showError(text); } else setStatus("offline", "offline");
}

el.logout.addEventListener("click", function () {
  const rt = S.refresh;
  endSession("");
  if (rt) postForm("/auth/revoke", { token: rt, token_type_hint: "refresh_token" })
    .catch(function () {});
  log("logged out");
});

// ---- the connection: the Sidecast client ----------------------------------------------------
// The client asks for a token at start (the login's), when the edge says token_expiring
// and after a 4001 close: a new one from the refresh token each time.
function tokenProvider(ctx) {
  if (ctx.reason === "start" && S.accessFresh) {
    S.accessFresh = false;
    return Promise.resolve(S.access);
  }
  if (!S.refresh) return Promise.reject(new Error("no refresh token"));
  if (ctx.reason === "expiring") log("token expiring: refreshing", "warn");
  return postForm("/auth/token", { grant_type: "refresh_token", refresh_token: S.refresh })
    .then(function (r) {
      if (!r.ok || !r.body || !r.body.access_token) {
        const why = "Token refresh failed: " + describeError(r.status, r.body);
        // the refresh token is no good (revoked, expired): the session is over
        if (r.status === 400 || r.status === 401) setTimeout(function () { endSession(why); }, 0);
        throw new Error(why);
      }
      takeTokens(r.body);
      log("new access token (" + ctx.reason + ")");
      return S.access;
    });
}

function startClient() {
  const sc = new Sidecast({
    url: function () { return S.wsUrl; },
    token: tokenProvider,
    httpUrl: ""
  });
  S.client = sc;
  sc.on("state", function (ch) {
    if (sc !== S.client) return;
    if (ch.state === "connecting") setStatus(ch.attempt ? "reconnecting" : "connecting",
      ch.attempt ? "reconnecting…" : "connecting…");
    else if (ch.state === "connected") { setStatus("connected", "connected"); showError(""); }
    else if (ch.state === "reconnecting") renderReconnect();
  });
  sc.on("welcome", function (m) {
    el.edge.textContent = (m.edge || "?") + "  (conn " + m.conn_id + ")";
    log("welcome from edge " + m.edge + " as " + m.user);
  });
  sc.on("close", function (c) {
    if (sc === S.client) log("closed " + c.code + (c.reason ? " (" + c.reason + ")" : ""), c.code === 1000 ? "" : "warn");
  });
  sc.on("error", function (e) {
    if (sc !== S.client) return;
    if (e.closeCode === 1008) endSession("The edge refused this page's origin (" + location.origin + ")");
    else if (e.closeCode === 4003) endSession("Forbidden: the session was revoked (" + e.message + ")");
    else if (e.code === "forbidden") showError("Forbidden: " + (e.message || "not allowed"));
    else log("edge error " + e.code + ": " + (e.message || ""), "err");
  });
  sc.on("refreshed", function (m) {
    S.refreshedFlashUntil = Date.now() / 1000 + 5;
    log("refreshed: token now valid until " + hhmmss(new Date(m.expires_at * 1000)));
    renderExpiry();
  });
  sc.on("resumed", function (r) {
    if (r.recovered) log("resumed " + r.topic + " after seq " + r.since);
    else log("gap on " + r.topic + " not recovered (" + r.code + ")", "warn");
  });
  SYMBOLS.forEach(function (s) {
    // since "last": the current price at once, not at the next tick
    sc.subscribe("prices." + s, { since: "last" }, function (ev) { onTick(s, ev.data); })
      .on("subscribed", function () { log("subscribed prices." + s); });
  });
  // the inbox is every connection's own; subscribing here resumes it with since as well
  sc.subscribe("user", function (ev) { onInbox(ev.data, ev.seq); });
}

function renderReconnect() {
  const sc = S.client;
  if (!sc || sc.state !== "reconnecting") return;
  const left = Math.max(0, (sc.reconnectAt - Date.now()) / 1000);
  setStatus("reconnecting", "reconnecting in " + left.toFixed(left < 10 ? 1 : 0) + " s" +
            " (attempt " + sc.attempt + ")");
}

// An in-band refresh now (the headless test's button).
function refreshToken() {
  return S.client ? S.client.refresh() : Promise.resolve(null);
}

function renderExpiry() {
  const exp = S.client ? S.client.expiresAt : 0;
  if (!exp) {
    el.expiry.textContent = "—";
    el.expiry.className = "";
    el.expiry.dataset.expiresAt = "";
    return;
  }
  const left = Math.floor(exp - now());
  let txt = left > 0 ? "expires in " + Math.floor(left / 60) + ":" + ("0" + left % 60).slice(-2)
                     : "expired";
  const flash = now() < S.refreshedFlashUntil;
  if (flash) txt += " — refreshed";
  el.expiry.textContent = txt;
  el.expiry.dataset.expiresAt = String(exp);
  el.expiry.className = flash ? "refreshed" : (left <= SOON_S ? "soon" : "");
}

// ---- orders -------------------------------------------------------------------------------
el.buy.addEventListener("click", function () {
  if (!S.access) return;
  el.buy.disabled = true;
  fetch("/api/orders", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + S.access },
    body: JSON.stringify({ symbol: "BTC", qty: 1 })
  }).then(readJson).then(function (r) {
    if (!r.ok || !r.body || !r.body.order_id) {
      var li = document.createElement("li");
      li.className = "failed";
      li.textContent = "order refused: " + describeError(r.status, r.body);
      el.orders.insertBefore(li, el.orders.firstChild);
      showError("Order refused: " + describeError(r.status, r.body));
      if (r.status === 401) refreshToken().catch(function () {});
      return;
    }
    var row = orderRow(r.body.order_id);
    if (!row.classList.contains("filled")) {
      row.className = "pending";
      row.textContent = "order " + r.body.order_id + " accepted (buy 1 BTC)";
    }
    log("order " + r.body.order_id + " accepted");
  }).catch(function (e) {
    showError("Order failed: " + e.message);
  }).then(function () { el.buy.disabled = !S.access; });
});

function orderRow(id) {
  var li = S.orders[id];
  if (!li) {
    li = document.createElement("li");
    li.dataset.orderId = id;
    S.orders[id] = li;
    el.orders.insertBefore(li, el.orders.firstChild);
  }
  return li;
}

function onInbox(data, seq) {
  if (data && data.type === "order_filled" && data.order_id) {
    var row = orderRow(data.order_id);
    row.className = "filled";
    row.dataset.price = data.price != null ? String(data.price) : "";
    var what = (data.side || "buy") + " " + (data.qty != null ? data.qty : 1) + " " + (data.symbol || "BTC");
    row.textContent = "order " + data.order_id + " accepted, filled: " + what +
      (data.price != null ? " at " + Number(data.price).toLocaleString("en-US", { maximumFractionDigits: 2 }) : "");
    log("fill for " + data.order_id + (data.price != null ? " at " + data.price : ""));
    return;
  }
  log("inbox #" + seq + ": " + JSON.stringify(data).slice(0, 200));
}

// ---- the chart ----------------------------------------------------------------------------
function onTick(sym, data) {
  var price = data && Number(data.price);
  if (!S.series[sym] || !isFinite(price)) return;
  var ser = S.series[sym];
  ser.push({ t: data.ts || Date.now(), p: price });
  if (ser.length > MAX_POINTS) ser.splice(0, ser.length - MAX_POINTS);
  S.ticks++;
  el.chart.dataset.ticks = String(S.ticks);
  el.chart.dataset[("last" + sym).toLowerCase()] = String(price);
  needDraw = true;
}

var needDraw = true;
el.symbol.addEventListener("change", function () { needDraw = true; });

function fmt(p) {
  return p >= 1000 ? p.toLocaleString("en-US", { maximumFractionDigits: 0 })
                   : p.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

function draw() {
  needDraw = false;
  var c = el.chart, dpr = window.devicePixelRatio || 1;
  var w = c.clientWidth || c.width, h = Math.round(w * 320 / 900);
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
  }
  var g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  var pad = { l: 64, r: 14, t: 12, b: 22 };
  var pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  var sel = el.symbol.value;
  var syms = sel === "ALL" ? SYMBOLS : [sel];
  // values: % change from each series' first point in the window, or absolute prices
  var lines = syms.map(function (s) {
    var ser = S.series[s], base = ser.length ? ser[0].p : 1;
    return { s: s, v: ser.map(function (pt) { return sel === "ALL" ? (pt.p / base - 1) * 100 : pt.p; }) };
  });
  var lo = Infinity, hi = -Infinity;
  lines.forEach(function (l) { l.v.forEach(function (v) { if (v < lo) lo = v; if (v > hi) hi = v; }); });
  g.font = "12px system-ui, sans-serif";
  if (lo === Infinity) {
    g.fillStyle = "#8a93a6";
    g.textAlign = "center";
    g.fillText(S.access ? "waiting for prices…" : "log in to see live prices", w / 2, h / 2);
    renderLegend();
    return;
  }
  if (hi - lo < 1e-9) { var m = Math.abs(hi) * 0.001 || 0.05; lo -= m; hi += m; }
  var span = hi - lo; lo -= span * 0.08; hi += span * 0.08;
  var y = function (v) { return pad.t + ph - (v - lo) / (hi - lo) * ph; };
  var x = function (i) { return pad.l + i / (MAX_POINTS - 1) * pw; };
  // grid and y labels
  g.strokeStyle = "#e6e9ef"; g.lineWidth = 1; g.fillStyle = "#6b7385"; g.textAlign = "right";
  for (var k = 0; k <= 4; k++) {
    var v = lo + (hi - lo) * k / 4, yy = Math.round(y(v)) + 0.5;
    g.beginPath(); g.moveTo(pad.l, yy); g.lineTo(w - pad.r, yy); g.stroke();
    g.fillText(sel === "ALL" ? v.toFixed(2) + " %" : fmt(v), pad.l - 6, yy + 4);
  }
  g.textAlign = "left";
  g.fillText("last " + MAX_POINTS + " ticks", pad.l, h - 6);
  // lines, right-aligned so the newest point is at the right edge
  lines.forEach(function (l) {
    if (!l.v.length) return;
    var off = MAX_POINTS - l.v.length;
    g.strokeStyle = COLORS[l.s]; g.lineWidth = 2; g.lineJoin = "round";
    g.beginPath();
    l.v.forEach(function (v, i) { if (i) g.lineTo(x(off + i), y(v)); else g.moveTo(x(off + i), y(v)); });
    g.stroke();
    var lx = x(off + l.v.length - 1), ly = y(l.v[l.v.length - 1]);
    g.fillStyle = COLORS[l.s];
    g.beginPath(); g.arc(lx, ly, 3, 0, 2 * Math.PI); g.fill();
  });
  renderLegend();
}

function renderLegend() {
  var html = SYMBOLS.map(function (s) {
    var ser = S.series[s], last = ser.length ? fmt(ser[ser.length - 1].p) : "—";
    return '<span style="--c:' + COLORS[s] + '">' + s + " " + last + "</span>";
  }).join("");
  if (el.legend.innerHTML !== html) el.legend.innerHTML = html;
}

function frame() {
  if (needDraw) draw();
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
window.addEventListener("resize", function () { needDraw = true; });

// once a second (4x for a smooth reconnect countdown): expiry and reconnect display
setInterval(function () {
  renderExpiry();
  renderReconnect();
}, 250);

window.addEventListener("online", function () {
  if (S.client) S.client.reconnectNow();
});
window.addEventListener("offline", function () {
  if (S.client && !S.client.connected) setStatus("offline", "offline (no network)");
});

// for the headless test and for poking around in the console
window.sidecastDemo = {
  state: S, refreshToken: refreshToken,
  get client() { return S.client; }
};
draw();
log("ready: log in to start");
