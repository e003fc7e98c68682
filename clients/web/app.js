/* Sidecast browser demo: log in at the gateway, hold a sidecast.v1 WebSocket to the edge,
 * draw live prices, place orders and watch their fills arrive in the user's inbox.
 * No framework, no build step. The gateway serves this directory (GATEWAY_STATIC_DIR). */
(function () {
  "use strict";

  var SYMBOLS = ["BTC", "ETH", "SOL"];
  var COLORS = { BTC: "#f2a900", ETH: "#627eea", SOL: "#14b89a" };
  var MAX_POINTS = 120;
  var REFRESH_AHEAD_S = 30;      // refresh this long before expiry if no token_expiring came
  var BACKOFF_BASE_MS = 500;
  var BACKOFF_CAP_MS = 30000;
  var LOG_MAX = 80;

  var $ = function (id) { return document.getElementById(id); };
  var el = {
    form: $("login-form"), username: $("username"), password: $("password"),
    login: $("login"), logout: $("logout"), userLabel: $("user-label"), error: $("error"),
    status: $("status"), chart: $("chart"), legend: $("legend"), symbol: $("symbol"),
    buy: $("buy"), orders: $("orders"), expiry: $("expiry"), edge: $("edge"), log: $("log")
  };

  var S = {
    user: null,
    access: null, refresh: null, wsUrl: null,
    expiresAt: 0,               // access-token expiry, Unix seconds (from welcome/refreshed)
    ws: null,
    wanted: false,              // should a connection be open (logged in)?
    attempt: 0,                 // reconnect attempts since the last welcome
    reconnectAt: 0, reconnectTimer: null,
    refreshing: null,           // the refresh in flight (a Promise)
    refreshTimer: null,
    refreshedFlashUntil: 0,
    lastSeq: {},                // topic -> last seq seen, for subscribe {since}
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
    if (body.expires_in) S.expiresAt = Math.floor(now()) + Number(body.expires_in);
    scheduleRefresh();
  }

  // ---- login / logout -----------------------------------------------------------------------
  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var user = el.username.value.trim(), pass = el.password.value;
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
        log("logged in as " + user + " (token for " + r.body.expires_in + " s)");
        el.userLabel.textContent = "signed in as " + user;
        el.password.value = "";
        el.username.disabled = el.password.disabled = true;
        el.login.hidden = true;
        el.logout.hidden = false;
        el.buy.disabled = false;
        S.wanted = true;
        S.attempt = 0;
        connect();
      })
      .catch(function (e) {
        setStatus("offline", "offline");
        showError("Cannot reach the gateway: " + e.message);
      })
      .then(function () { el.login.disabled = false; });
  });

  el.logout.addEventListener("click", function () {
    var rt = S.refresh;
    S.wanted = false;
    clearTimeout(S.reconnectTimer);
    clearTimeout(S.refreshTimer);
    if (S.ws) S.ws.close(1000, "logout");
    S.ws = null;
    if (rt) postForm("/auth/revoke", { token: rt, token_type_hint: "refresh_token" })
      .catch(function () {});
    S.access = S.refresh = null;
    S.expiresAt = 0;
    S.lastSeq = {};
    el.username.disabled = el.password.disabled = false;
    el.login.hidden = false;
    el.logout.hidden = true;
    el.buy.disabled = true;
    el.userLabel.textContent = "";
    setStatus("offline", "offline");
    log("logged out");
  });

  // ---- the WebSocket ------------------------------------------------------------------------
  function send(obj) {
    if (S.ws && S.ws.readyState === WebSocket.OPEN) { S.ws.send(JSON.stringify(obj)); return true; }
    return false;
  }

  function connect() {
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = null;
    S.reconnectAt = 0;
    if (!S.wanted || !S.access || !S.wsUrl) return;
    setStatus("connecting", S.attempt ? "reconnecting…" : "connecting…");
    var ws;
    try {
      ws = new WebSocket(S.wsUrl, "sidecast.v1");
    } catch (e) {
      showError("Bad WebSocket URL " + S.wsUrl + ": " + e.message);
      setStatus("error", "offline");
      return;
    }
    S.ws = ws;
    ws.onopen = function () {
      if (ws !== S.ws) return;
      // Browsers cannot set headers on a WebSocket: the token is the first message.
      ws.send(JSON.stringify({ type: "auth", token: S.access }));
    };
    ws.onmessage = function (ev) {
      if (ws !== S.ws) return;
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { log("bad frame from edge", "warn"); return; }
      onMessage(m);
    };
    ws.onclose = function (ev) {
      if (ws !== S.ws) return;
      S.ws = null;
      onClose(ev.code, ev.reason);
    };
    ws.onerror = function () { /* onclose follows with the code */ };
  }

  function onMessage(m) {
    switch (m.type) {
    case "welcome":
      S.attempt = 0;
      S.expiresAt = m.expires_at;
      scheduleRefresh();
      setStatus("connected", "connected");
      showError("");
      el.edge.textContent = (m.edge || "?") + "  (conn " + m.conn_id + ")";
      log("welcome from edge " + m.edge + " as " + m.user);
      SYMBOLS.forEach(function (s) { subscribe("prices." + s); });
      if (S.lastSeq.user !== undefined) subscribe("user"); // the inbox is automatic; replay it
      break;
    case "subscribed":
      log("subscribed " + m.topic);
      break;
    case "unsubscribed":
      log("unsubscribed " + m.topic, "warn");
      break;
    case "event":
      if (typeof m.seq === "number") S.lastSeq[m.topic] = m.seq;
      if (m.topic === "user") onInbox(m.data, m.seq);
      else if (m.topic.indexOf("prices.") === 0) onTick(m.topic.slice(7), m.data);
      break;
    case "token_expiring":
      log("token expiring at " + hhmmss(new Date(m.expires_at * 1000)) + ": refreshing", "warn");
      refreshToken();
      break;
    case "refreshed":
      S.expiresAt = m.expires_at;
      S.refreshedFlashUntil = now() + 5;
      scheduleRefresh();
      log("refreshed: token now valid until " + hhmmss(new Date(m.expires_at * 1000)));
      renderExpiry();
      break;
    case "error":
      if (m.code === "forbidden") showError("Forbidden: " + (m.message || "not allowed"));
      else log("edge error " + m.code + ": " + (m.message || ""), "err");
      break;
    case "pong": case "ack":
      break;
    default:
      log("unknown message " + m.type, "warn");
    }
  }

  function subscribe(topic) {
    var msg = { type: "subscribe", topic: topic };
    if (S.lastSeq[topic] !== undefined) msg.since = S.lastSeq[topic];
    send(msg);
  }

  function onClose(code, reason) {
    var why = "closed " + code + (reason ? " (" + reason + ")" : "");
    if (!S.wanted) { setStatus("offline", "offline"); return; }
    if (code === 4001) {
      // Token missing, invalid or expired: get a new one, then reconnect.
      log(why + ": token rejected, refreshing", "warn");
      refreshToken().then(function () { if (S.wanted) scheduleReconnect(); });
      return;
    }
    if (code === 4003 || code === 1008) {
      S.wanted = false;
      setStatus("error", "offline");
      showError(code === 1008 ? "The edge refused this page's origin (" + location.origin + ")"
                              : "Forbidden: the session was revoked" + (reason ? " (" + reason + ")" : ""));
      el.buy.disabled = true;
      return;
    }
    log(why, code === 1000 ? "" : "warn");
    scheduleReconnect();
  }

  // Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)).
  function scheduleReconnect() {
    var ceil = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, S.attempt));
    var delay = Math.floor(Math.random() * ceil);
    S.attempt++;
    S.reconnectAt = Date.now() + delay;
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = setTimeout(connect, delay);
    renderReconnect();
  }

  function renderReconnect() {
    if (!S.reconnectAt) return;
    var left = Math.max(0, (S.reconnectAt - Date.now()) / 1000);
    setStatus("reconnecting", "reconnecting in " + left.toFixed(left < 10 ? 1 : 0) + " s" +
              " (attempt " + S.attempt + ")");
  }

  // ---- token refresh ------------------------------------------------------------------------
  function scheduleRefresh() {
    clearTimeout(S.refreshTimer);
    if (!S.expiresAt || !S.refresh) return;
    var ms = (S.expiresAt - REFRESH_AHEAD_S - now()) * 1000;
    S.refreshTimer = setTimeout(refreshToken, Math.max(0, ms));
  }

  // Resolves true when a new access token is in hand (and sent to the edge if connected).
  function refreshToken() {
    if (S.refreshing) return S.refreshing;
    if (!S.refresh) return Promise.resolve(false);
    clearTimeout(S.refreshTimer);
    S.refreshing = postForm("/auth/token", { grant_type: "refresh_token", refresh_token: S.refresh })
      .then(function (r) {
        if (!r.ok || !r.body || !r.body.access_token) {
          showError("Token refresh failed: " + describeError(r.status, r.body));
          if (r.status === 400 || r.status === 401) {
            S.wanted = false;
            if (S.ws) S.ws.close(1000, "session ended");
            setStatus("error", "offline");
            el.buy.disabled = true;
          }
          return false;
        }
        takeTokens(r.body);
        if (send({ type: "refresh", token: S.access })) log("sent refresh to the edge");
        return true;
      })
      .catch(function (e) {
        log("token refresh failed: " + e.message + " (retrying in 5 s)", "err");
        clearTimeout(S.refreshTimer);
        S.refreshTimer = setTimeout(refreshToken, 5000);
        return false;
      })
      .then(function (ok) { S.refreshing = null; return ok; });
    return S.refreshing;
  }

  function renderExpiry() {
    if (!S.expiresAt) {
      el.expiry.textContent = "—";
      el.expiry.className = "";
      el.expiry.dataset.expiresAt = "";
      return;
    }
    var left = Math.floor(S.expiresAt - now());
    var txt = left > 0 ? "expires in " + Math.floor(left / 60) + ":" + ("0" + left % 60).slice(-2)
                       : "expired";
    var flash = now() < S.refreshedFlashUntil;
    if (flash) txt += " — refreshed";
    el.expiry.textContent = txt;
    el.expiry.dataset.expiresAt = String(S.expiresAt);
    el.expiry.className = flash ? "refreshed" : (left <= REFRESH_AHEAD_S ? "soon" : "");
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
        if (r.status === 401) refreshToken();
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
    if (S.reconnectAt && !S.ws) renderReconnect();
  }, 250);

  window.addEventListener("online", function () {
    if (S.wanted && !S.ws) { S.attempt = 0; connect(); }
  });
  window.addEventListener("offline", function () {
    if (!S.ws) setStatus("offline", "offline (no network)");
  });

  // for the headless test and for poking around in the console
  window.sidecastDemo = { state: S, refreshToken: refreshToken };
  draw();
  log("ready: log in to start");
})();
