// Sync Status: as-you-type search, state filter, sortable columns, auto-refresh.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("reps");
  const search = document.getElementById("search");
  const state = document.getElementById("state");
  if (table && search && state) {
    const apply = () => {
      const q = search.value.trim().toLowerCase();
      let shown = 0;
      for (const tr of table.tBodies[0].rows) {
        const ok = (!q || tr.dataset.name.includes(q)) && (!state.value || tr.dataset.state === state.value);
        tr.hidden = !ok;
        if (ok) shown++;
      }
      const none = document.getElementById("no-match");
      if (none) none.hidden = shown > 0;
      const url = new URL(location.href);
      url.searchParams.set("q", search.value);
      url.searchParams.set("state", state.value);
      history.replaceState(null, "", url);
    };
    search.addEventListener("input", apply);
    state.addEventListener("change", apply);
  }
  for (const th of document.querySelectorAll("table.sortable th[data-sort]")) {
    th.addEventListener("click", () => {
      const body = th.closest("table").tBodies[0];
      const i = th.cellIndex;
      const dir = th.dataset.dir === "asc" ? -1 : 1;
      th.dataset.dir = dir === 1 ? "asc" : "desc";
      const key = (tr) => {
        const td = tr.cells[i];
        const v = td.dataset.value ?? td.textContent.trim();
        return th.dataset.sort === "num" ? parseFloat(v) || 0 : v.toLowerCase();
      };
      const rows = [...body.rows].sort((a, b) => (key(a) > key(b) ? dir : key(a) < key(b) ? -dir : 0));
      body.append(...rows);
    });
  }
  const refresh = document.querySelector("[data-every]");
  if (refresh) {
    setInterval(() => {
      if (document.activeElement !== search) location.reload();
    }, Number(refresh.dataset.every) * 1000);
  }
});
