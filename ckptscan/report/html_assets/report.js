// ckptscan HTML report: the zoomable treemap and sortable tables.
// Data comes from the JSON block #ckptscan-data (never from markup); every string is put on the
// page with textContent or DOM properties, never as HTML, so a tensor named like a script tag stays text.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("ckptscan-data").textContent);
  var ROLE_COLORS = {
    weight: "#4e79a7", bias: "#a0cbe8", embedding: "#f28e2b", output_head: "#ffbe7d", norm: "#59a14f",
    quantization: "#8cd17d", buffer: "#b6992d", optimizer_state: "#e15759", ema: "#ff9d9a",
    master_weight: "#d37295", training_state: "#fabfd2", other: "#79706e", overhead: "#bab0ac"
  };
  function colorOf(node, mode, dtypeColors) {
    if (node.k === "overhead") { return ROLE_COLORS.overhead; }
    if (mode === "dtype") {
      return (dtypeColors && Object.prototype.hasOwnProperty.call(dtypeColors, node.d)) ?
        dtypeColors[node.d] : ROLE_COLORS.other;
    }
    return Object.prototype.hasOwnProperty.call(ROLE_COLORS, node.r) ? ROLE_COLORS[node.r] : ROLE_COLORS.other;
  }

  function humanBytes(n) {
    var units = ["B", "KB", "MB", "GB", "TB"];
    var v = n, i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return i === 0 ? n.toLocaleString("en-US") + " B" : v.toFixed(2) + " " + units[i];
  }

  // Squarified treemap (Bruls, Huizing, van Wijk): rows of tiles whose aspect ratios stay near 1.
  function squarify(items, x, y, w, h) {
    var out = [];
    var total = 0;
    items.forEach(function (it) { total += it.v; });
    if (total <= 0 || w <= 0 || h <= 0) { return out; }
    var scale = (w * h) / total;
    var rest = items.map(function (it) { return { item: it, a: it.v * scale }; });
    var row = [];
    function worst(r, side) {
      var s = 0, mx = 0, mn = Infinity;
      r.forEach(function (e) { s += e.a; mx = Math.max(mx, e.a); mn = Math.min(mn, e.a); });
      if (s <= 0) { return Infinity; }
      return Math.max((side * side * mx) / (s * s), (s * s) / (side * side * mn));
    }
    function layoutRow(r) {
      var s = 0;
      r.forEach(function (e) { s += e.a; });
      if (w >= h) {
        var cw = s / h, cy = y;
        r.forEach(function (e, i) {
          var th = i === r.length - 1 ? y + h - cy : e.a / cw;
          out.push({ item: e.item, x: x, y: cy, w: cw, h: th });
          cy += th;
        });
        x += cw; w -= cw;
      } else {
        var rh = s / w, cx = x;
        r.forEach(function (e, i) {
          var tw = i === r.length - 1 ? x + w - cx : e.a / rh;
          out.push({ item: e.item, x: cx, y: y, w: tw, h: rh });
          cx += tw;
        });
        y += rh; h -= rh;
      }
    }
    while (rest.length) {
      var side = Math.min(w, h);
      var next = rest[0];
      if (row.length === 0 || worst(row.concat([next]), side) <= worst(row, side)) {
        row.push(next); rest.shift();
      } else {
        layoutRow(row); row = [];
      }
    }
    if (row.length) { layoutRow(row); }
    return out;
  }

  function sortedChildren(node) {
    return (node.c || []).filter(function (c) { return c.b > 0; })
      .slice().sort(function (a, b) { return b.b - a.b; })
      .map(function (c) { return { node: c, v: c.b }; });
  }

  function Treemap(root, model) {
    this.root = root;
    this.model = model;
    this.box = root.querySelector(".tm-box");
    this.crumbs = root.querySelector(".tm-crumbs");
    this.info = root.querySelector(".tm-info");
    this.mode = "role";
    this.stack = [model.tree];
    var self = this;
    root.querySelector(".tm-color").addEventListener("change", function (e) {
      self.mode = e.target.value;
      root.querySelectorAll(".legend").forEach(function (l) {
        l.hidden = !l.classList.contains("legend-" + self.mode);
      });
      self.draw();
    });
    root.querySelector(".tm-up").addEventListener("click", function () {
      if (self.stack.length > 1) { self.stack.pop(); self.draw(); }
    });
    this.draw();
  }

  Treemap.prototype.zoom = function (node) {
    this.stack.push(node);
    this.draw();
  };

  Treemap.prototype.draw = function () {
    var self = this;
    var node = this.stack[this.stack.length - 1];
    var box = this.box;
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var W = box.clientWidth, H = box.clientHeight;
    var tiles = squarify(sortedChildren(node), 0, 0, W, H);
    tiles.forEach(function (t) { self.tile(box, t, 0); });
    // breadcrumb
    while (this.crumbs.firstChild) { this.crumbs.removeChild(this.crumbs.firstChild); }
    this.stack.forEach(function (n, i) {
      if (i) { self.crumbs.appendChild(document.createTextNode(" / ")); }
      var a = document.createElement("button");
      a.type = "button";
      a.className = "tm-crumb";
      a.textContent = i === 0 ? "(model)" : n.n;
      a.addEventListener("click", function () { self.stack = self.stack.slice(0, i + 1); self.draw(); });
      self.crumbs.appendChild(a);
    });
    this.info.textContent = (node.p || node.n) + ": " + humanBytes(node.b) + " (" + node.b.toLocaleString("en-US") + " B)";
  };

  Treemap.prototype.tile = function (parent, t, depth) {
    var self = this;
    var n = t.item.node;
    var el = document.createElement("div");
    el.className = "tile" + (n.c ? " group" : " leaf") + (depth ? " nested" : " top");
    el.style.left = t.x + "px";
    el.style.top = t.y + "px";
    el.style.width = Math.max(0, t.w) + "px";
    el.style.height = Math.max(0, t.h) + "px";
    el.dataset.bytes = String(n.b);
    el.dataset.path = n.p || n.n;
    el.dataset.kind = n.k || "";
    var desc = (n.p || n.n) + "\n" + humanBytes(n.b);
    if (n.s) { desc += "\n" + n.d + " " + n.s; }
    if (n.r) { desc += "\nrole: " + n.r; }
    el.title = desc;
    if (!n.c) {
      el.style.background = colorOf(n, this.mode, this.model.dtype_colors);
    }
    if (t.w > 40 && t.h > 14) {
      var label = document.createElement("span");
      label.className = "tile-label";
      label.textContent = n.n;
      el.appendChild(label);
    }
    if (n.c) {
      el.addEventListener("click", function (e) { e.stopPropagation(); self.zoom(n); });
      if (depth < 3 && t.w > 30 && t.h > 34) {
        var inner = squarify(sortedChildren(n), 2, 16, t.w - 4, t.h - 18);
        inner.forEach(function (c) {
          if (c.w >= 1 && c.h >= 1) { self.tile(el, c, depth + 1); }
        });
      } else {
        el.style.background = colorOf(n, this.mode, this.model.dtype_colors);
      }
    }
    parent.appendChild(el);
  };

  // -- sortable tables: a click on a header sorts by that column (data-v holds the sort key) --------
  function sortTable(th) {
    var table = th.closest("table");
    var body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.classList.contains("num");
    var dir = th.dataset.dir === "asc" ? "desc" : "asc";
    Array.prototype.forEach.call(th.parentNode.children, function (h) { delete h.dataset.dir; });
    th.dataset.dir = dir;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col], y = b.cells[col];
      var kx = x.dataset.v !== undefined ? x.dataset.v : x.textContent;
      var ky = y.dataset.v !== undefined ? y.dataset.v : y.textContent;
      var r;
      if (numeric) {
        var fx = parseFloat(kx), fy = parseFloat(ky);
        if (isNaN(fx)) { fx = -Infinity; }
        if (isNaN(fy)) { fy = -Infinity; }
        r = fx - fy;
      } else {
        r = kx < ky ? -1 : kx > ky ? 1 : 0;
      }
      return dir === "asc" ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () { sortTable(th); });
  });

  var maps = [];
  document.querySelectorAll(".treemap").forEach(function (root) {
    var model = data.models[parseInt(root.dataset.model, 10)];
    if (model && model.tree) { maps.push(new Treemap(root, model)); }
  });
  var pending = null;
  window.addEventListener("resize", function () {
    if (pending) { clearTimeout(pending); }
    pending = setTimeout(function () { maps.forEach(function (m) { m.draw(); }); }, 100);
  });
  document.body.dataset.ready = "1";
})();
