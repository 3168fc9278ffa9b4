// Bottleneck: small progressive enhancements. Every page works without this file.
// - sortable tables: click a column header of a `table.sortable`; rows are grouped in <tbody>
//   elements that carry their sort keys as data attributes;
// - the service filter applies on change;
// - optional auto-refresh (every 30 s) of pages with a relative window, remembered per browser.
"use strict";

(function () {
  document.documentElement.classList.add("js");

  function sortTable(table, th) {
    var key = th.getAttribute("data-key");
    var text = th.getAttribute("data-type") === "text";
    var descending = th.getAttribute("aria-sort") !== "descending";
    if (text && !th.hasAttribute("aria-sort")) descending = false;
    table.querySelectorAll("thead th").forEach(function (other) {
      other.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var groups = Array.prototype.slice.call(table.tBodies);
    groups.sort(function (a, b) {
      var x = a.getAttribute("data-" + key) || "";
      var y = b.getAttribute("data-" + key) || "";
      var order = text ? x.localeCompare(y) : (parseFloat(x) || 0) - (parseFloat(y) || 0);
      return descending ? -order : order;
    });
    groups.forEach(function (group) {
      table.appendChild(group);
    });
  }

  function setupSorting() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("thead th[data-key]").forEach(function (th) {
        th.tabIndex = 0;
        th.addEventListener("click", function () {
          sortTable(table, th);
        });
        th.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            sortTable(table, th);
          }
        });
      });
    });
  }

  function setupAutosubmit() {
    document.querySelectorAll("select.autosubmit").forEach(function (select) {
      select.addEventListener("change", function () {
        select.form.submit();
      });
    });
  }

  var REFRESH_MS = 30000;
  var STORAGE_KEY = "bottleneck.autorefresh";

  function setupAutorefresh() {
    var label = document.querySelector(".autorefresh");
    var box = document.getElementById("autorefresh");
    // Only relative windows ("last 1h") move with time; a custom window is fixed.
    if (!label || !box || /[?&]from=/.test(window.location.search)) return;
    label.hidden = false;
    var enabled = false;
    try {
      enabled = window.localStorage.getItem(STORAGE_KEY) === "1";
    } catch (err) {
      enabled = false;
    }
    box.checked = enabled;
    var timer = null;
    function schedule() {
      if (timer) window.clearTimeout(timer);
      timer = box.checked ? window.setTimeout(function () { window.location.reload(); }, REFRESH_MS) : null;
    }
    box.addEventListener("change", function () {
      try {
        window.localStorage.setItem(STORAGE_KEY, box.checked ? "1" : "0");
      } catch (err) {
        // Storage may be disabled; the checkbox still works for this page.
      }
      schedule();
    });
    schedule();
  }

  function start() {
    setupSorting();
    setupAutosubmit();
    setupAutorefresh();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
