// Sortable tables: click a header to sort by that column (numbers by their raw value).
(function () {
  "use strict";
  function key(cell) {
    var v = cell.getAttribute("data-v");
    if (v !== null && v !== "") { return { num: true, v: parseFloat(v) }; }
    var text = cell.textContent.trim().toLowerCase();
    return { num: false, v: text, missing: text === "" || text === "\u2014" };
  }
  function sortBy(table, index, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    rows.sort(function (a, b) {
      var x = key(a.cells[index]), y = key(b.cells[index]);
      if (!!x.missing !== !!y.missing) { return x.missing ? 1 : -1; }  // "—" stays last
      var r;
      if (x.num && y.num) { r = x.v - y.v; }
      else if (x.num !== y.num) { r = x.num ? -1 : 1; }
      else { r = x.v < y.v ? -1 : (x.v > y.v ? 1 : 0); }
      return asc ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, index, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, index, th); }
      });
    });
  });
  // A picture that cannot be decoded says so instead of leaving an empty frame.
  window.addEventListener("load", function () {
    var ok = 0, broken = 0;
    document.querySelectorAll("figure img").forEach(function (img) {
      if (img.complete && img.naturalWidth > 0) { ok += 1; return; }
      broken += 1;
      img.classList.add("broken");
      var msg = document.createElement("div");
      msg.className = "note note-error";
      msg.textContent = "this picture could not be displayed: " + (img.alt || "picture");
      img.parentNode.insertBefore(msg, img);
    });
    document.body.setAttribute("data-images-ok", String(ok));
    document.body.setAttribute("data-images-broken", String(broken));
  });
  document.body.setAttribute("data-ready", "1");
})();
