(function () {
  "use strict";
  var NUMBER = /[+-]?(?:\d+(?:\.\d*)?|\.\d+)/;

  function cellValue(cell, numeric) {
    var raw = cell && cell.dataset.v !== undefined ? cell.dataset.v : (cell ? cell.textContent : "");
    if (!numeric) { return raw.trim(); }
    var text = raw.trim();
    if (text.charAt(0) === "\u221e" || text === "Infinity") { return Infinity; }
    var m = NUMBER.exec(text.replace(/^</, ""));
    return m && m.index === 0 ? parseFloat(m[0]) : NaN;
  }

  function units(table) {
    var groups = table.querySelectorAll(":scope > tbody.entry");
    if (groups.length) { return Array.prototype.slice.call(groups); }
    return table.tBodies.length ? Array.prototype.slice.call(table.tBodies[0].rows) : [];
  }

  function firstRow(unit) { return unit.tagName === "TBODY" ? unit.rows[0] : unit; }

  function sortBy(table, th, col) {
    var numeric = th.dataset.type === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
      if (other !== th) { other.setAttribute("aria-sort", "none"); }
    });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    var list = units(table).map(function (unit) {
      return { unit: unit, index: Number(unit.dataset.index), value: cellValue(firstRow(unit).cells[col], numeric) };
    });
    list.sort(function (a, b) {
      var am = numeric ? isNaN(a.value) : a.value === "";
      var bm = numeric ? isNaN(b.value) : b.value === "";
      if (am !== bm) { return am ? 1 : -1; }
      var c = 0;
      if (!am) {
        c = numeric ? (a.value < b.value ? -1 : a.value > b.value ? 1 : 0)
                    : a.value.localeCompare(b.value, "en", { numeric: true, sensitivity: "base" });
      }
      return c !== 0 ? sign * c : a.index - b.index;
    });
    list.forEach(function (item) { item.unit.parentNode.appendChild(item.unit); });
  }

  function initSort(table) {
    units(table).forEach(function (unit, i) { unit.dataset.index = String(i); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = th.querySelector("button.sort");
      if (button) { button.addEventListener("click", function () { sortBy(table, th, col); }); }
    });
  }

  function applyFilters(form, table) {
    var f = {};
    Array.prototype.forEach.call(form.elements, function (el) { if (el.name) { f[el.name] = el.value; } });
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var shown = heads.map(function (th) {
      if (!th.dataset.dataset) { return true; }
      return (!f.dataset || th.dataset.dataset === f.dataset) &&
             (!f.standin || th.dataset.standin === f.standin);
    });
    var narrowed = Boolean(f.dataset || f.standin);
    heads.forEach(function (th, i) { th.hidden = !shown[i]; });
    var all = units(table), visible = 0;
    all.forEach(function (unit) {
      var row = firstRow(unit), d = unit.dataset;
      Array.prototype.forEach.call(row.cells, function (cell, i) { cell.hidden = !shown[i]; });
      var ok = (!f.preset || d.preset === f.preset) && (!f.model || d.model === f.model) &&
               (!f.impl || d.impl === f.impl);
      if (ok && narrowed) {
        ok = heads.some(function (th, i) {
          return th.dataset.dataset && shown[i] && row.cells[i].dataset.v !== "";
        });
      }
      unit.hidden = !ok;
      if (ok) { visible += 1; }
    });
    var count = form.querySelector("output");
    if (count) { count.textContent = visible + " of " + all.length + " rows"; }
  }

  function initFilters(form) {
    var table = document.getElementById(form.getAttribute("data-table"));  // form.dataset: its "dataset" select
    if (!table) { return; }
    form.addEventListener("change", function () { applyFilters(form, table); });
    form.addEventListener("reset", function () {
      window.setTimeout(function () { applyFilters(form, table); }, 0);
    });
    applyFilters(form, table);
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  function copied(button, ok) {
    button.textContent = ok ? "Copied" : "Select and press Ctrl+C";
    window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.copy") : null;
    if (!button) { return; }
    var code = button.parentNode.querySelector("code");
    var text = code ? code.textContent : "";
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button, true); },
                                               function () { copied(button, fallbackCopy(text)); });
    } else {
      copied(button, fallbackCopy(text));
    }
  });

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), initSort);
  Array.prototype.forEach.call(document.querySelectorAll("form.filters"), initFilters);
}());
