/* Progressive enhancement only: codes stay selectable and downloadable without it. */
(function () {
  if (!navigator.clipboard) return;
  Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var scope = button.closest(button.getAttribute("data-copy") === "all" ? ".codes" : ".code-row");
      var text = Array.prototype.map.call(scope.querySelectorAll(".code, .code-link"), function (el) {
        return el.textContent;
      }).join("\n");
      navigator.clipboard.writeText(text).then(function () {
        var label = button.textContent;
        button.textContent = button.getAttribute("data-done");
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  });
})();

/* Live countdowns to a sale's start or a payment deadline. The server
   decides; at zero a sale page reloads once to show what the server says
   (only if it was counting down when loaded, so a fast clock cannot loop). */
(function () {
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  Array.prototype.forEach.call(document.querySelectorAll("[data-countdown]"), function (el) {
    var end = Date.parse(el.getAttribute("data-countdown"));
    if (isNaN(end)) return;
    var reload = el.hasAttribute("data-reload") && end > Date.now();
    var timer;
    function tick() {
      var left = Math.max(0, Math.round((end - Date.now()) / 1000));
      var d = Math.floor(left / 86400);
      var text = (d ? d + "d " : "") + pad(Math.floor(left % 86400 / 3600)) + ":" +
        pad(Math.floor(left % 3600 / 60)) + ":" + pad(left % 60);
      el.textContent = el.getAttribute("data-label") + " " + text;
      el.hidden = false;
      if (left === 0) {
        clearInterval(timer);
        if (reload) setTimeout(function () { location.reload(); }, 1000);
      }
    }
    timer = setInterval(tick, 1000);
    tick();
  });
})();

/* A form is sent once: its button is disabled as it goes (a second press
   on a slow network made a second order, or hit the buyer's own limit).
   A page restored by the back button is loaded again, so the button works
   and the page shows what the server says now (a pay page after paying). */
(function () {
  document.addEventListener("submit", function (e) {
    var buttons = e.target.querySelectorAll("button[type=submit], button:not([type])");
    setTimeout(function () {
      Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    }, 0);
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted) window.location.reload();
  });
})();

/* The price box follows the quantity and the coupon: the server renders it
   (in the page's language, escaped), the script only swaps it in. Without
   the script the box shows the price for the quantity the page loaded with,
   and the order is priced by the server either way. */
(function () {
  var box = document.getElementById("quote");
  if (!box || !window.fetch) return;
  var quantity = document.getElementById("quantity");
  var coupon = document.getElementById("coupon");
  var apply = document.getElementById("coupon-apply");
  var seq = 0;
  function refresh() {
    var mine = ++seq;
    var url = box.getAttribute("data-quote-url") + "?quantity=" +
      encodeURIComponent(quantity ? quantity.value : "") + "&coupon=" +
      encodeURIComponent(coupon ? coupon.value : "");
    fetch(url, { credentials: "same-origin" }).then(function (r) {
      // 429 still carries the box, saying the coupon could not be checked.
      return r.ok || r.status === 429 ? r.text() : null;
    }).then(function (html) {
      if (html !== null && mine === seq) box.innerHTML = html;
    }).catch(function () {});
  }
  if (apply) {
    apply.hidden = false;
    apply.addEventListener("click", refresh);
  }
  if (coupon) {
    coupon.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); refresh(); }
    });
  }
  if (quantity) quantity.addEventListener("change", refresh);
})();

/* An order opened by its link (?token=): the server has put the token in
   this browser's cookie, so it leaves the address bar, the history and
   whatever a shared screen shows. */
(function () {
  if (!window.URL || !window.history || !history.replaceState) return;
  var url = new URL(location.href);
  if (!url.searchParams.has("token")) return;
  url.searchParams.delete("token");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
})();

/* Times in the reader's own time zone: the page says UTC, to the second;
   the UTC text stays as the element's title. */
(function () {
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), function (el) {
    var t = new Date(el.getAttribute("datetime"));
    if (isNaN(t.getTime())) return;
    var offset = -t.getTimezoneOffset();
    var zone = "UTC" + (offset < 0 ? "-" : "+") + pad(Math.floor(Math.abs(offset) / 60)) +
      (Math.abs(offset) % 60 ? ":" + pad(Math.abs(offset) % 60) : "");
    el.title = el.textContent;
    el.textContent = t.getFullYear() + "-" + pad(t.getMonth() + 1) + "-" + pad(t.getDate()) + " " +
      pad(t.getHours()) + ":" + pad(t.getMinutes()) + ":" + pad(t.getSeconds()) + " (" + zone + ")";
  });
})();

/* The language links keep the page's other query parameters (a shared
   coupon link, a quantity): the server writes them as `?lang=…` alone.
   Links to another path (an error page's, to its product page) stay. */
(function () {
  if (!window.URL) return;
  Array.prototype.forEach.call(document.querySelectorAll(".lang-switch a[hreflang]"), function (a) {
    var target = new URL(a.getAttribute("href"), location.href);
    if (target.pathname !== location.pathname) return;
    var here = new URL(location.href);
    here.searchParams.delete("token");
    here.searchParams.set("lang", target.searchParams.get("lang"));
    a.setAttribute("href", here.pathname + here.search);
  });
})();
