// The leaderboard's only script: sort a table by a clicked column, filter rows by a typed
// text, and name the point under the pointer. No library, nothing fetched.
(function () {
  "use strict";

  function key(cell) {
    var text = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    var n = Number(text);
    return text !== "" && isFinite(n) ? n : text.toLowerCase();
  }

  // Numbers before text, missing values (empty) last, in either direction.
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    if (a === "" || b === "") return (a === "") - (b === "");
    if (typeof a === "number") return -1;
    if (typeof b === "number") return 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function sortBy(table, index, th) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) {
      var a = key(r.cells[index]), b = key(s.cells[index]);
      if (a === "" || b === "") return compare(a, b);
      return ascending ? compare(a, b) : compare(b, a);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.tabIndex = 0;
      th.title = "Sort by this column";
      th.addEventListener("click", function () { sortBy(table, i, th); });
      th.addEventListener("keydown", function (ev) { if (ev.key === "Enter") sortBy(table, i, th); });
    });
  });

  var filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("input", function () {
      var q = filter.value.trim().toLowerCase();
      document.querySelectorAll("table.filterable tbody tr").forEach(function (tr) {
        tr.hidden = q !== "" && tr.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  }

  document.querySelectorAll("figure").forEach(function (fig) {
    var out = fig.querySelector(".readout");
    if (!out) return;
    fig.querySelectorAll("[data-label]").forEach(function (el) {
      el.addEventListener("mouseenter", function () { out.textContent = el.getAttribute("data-label"); });
    });
  });
})();
