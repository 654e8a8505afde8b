/* The tamrl viewer: maps of a served cube (/tiles), a pixel's daily series (/flux) and a polygon's totals
(/flux/region). Plain JS with Leaflet, Leaflet-Geoman and uPlot, all served by the service: no internet needed. */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const FLUXES = ["GPP", "RECO", "NEE"];
  const BASEMAP_KEY = "tamrl.basemap";
  const state = { cubes: [], cube: null, days: [], map: null, data: null, base: null, point: null, regions: null,
                  series: null, chart: null, totals: null, request: 0 };
  window.tamrl = state; // for the browser test and the curious

  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const fmt = (v) => (v === null || v === undefined ? "n/a" : String(Number(v.toPrecision(4)))); // 4 significant digits

  async function getJSON(url, init) {
    const response = await fetch(url, init);
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(body && body.detail ? body.detail : `${url}: HTTP ${response.status}`);
    return body;
  }

  function status(text, error) {
    $("status").textContent = text;
    $("status").className = error ? "small error" : "small";
  }

  function dayList(start, end) {
    const out = [];
    for (let t = Date.parse(start); t <= Date.parse(end); t += 86400000) out.push(new Date(t).toISOString().slice(0, 10));
    return out;
  }

  const mode = () => document.querySelector("input[name=mode]:checked").value;
  const baseVariable = () => $("variable").value.replace("_std", "");

  function period() { // the map's and the totals' days
    return mode() === "day" ? { date: state.days[+$("day").value] } : { start: $("start").value, end: $("end").value };
  }

  // ---- the map ----
  async function drawMap() {
    const variable = $("variable").value, ticket = ++state.request;
    const params = new URLSearchParams({ cube: state.cube.name, variable, ...period() });
    document.body.dataset.tiles = "loading";
    try {
      const [tilejson, legend] = await Promise.all([
        getJSON(`/tiles/tilejson.json?${params}`), getJSON(`/tiles/legend.json?variable=${variable}`)]);
      if (ticket !== state.request) return; // a newer choice is on its way
      if (state.data) state.map.removeLayer(state.data);
      state.data = tileLayer(tilejson, { zIndex: 2 });
      state.data.on("load", () => { document.body.dataset.tiles = "loaded"; });
      state.data.once("tileerror", (e) => tileProblem(e.tile.src));
      state.data.addTo(state.map);
      drawLegend(legend);
      status("");
    } catch (e) {
      status(`The map: ${e.message}`, true);
    }
  }

  async function tileProblem(url) { // a tile failed: say why (the service's Problem) where the user sees it
    const response = await fetch(url).catch(() => null);
    const body = response && !response.ok ? await response.json().catch(() => null) : null;
    if (body && body.detail) status(`The map: ${body.detail}`, true);
  }

  function tileLayer(tilejson, options) {
    const b = tilejson.bounds;
    return L.tileLayer(tilejson.tiles[0], { bounds: L.latLngBounds([b[1], b[0]], [b[3], b[2]]),
      minZoom: 0, maxZoom: 14, maxNativeZoom: tilejson.maxzoom, attribution: esc(tilejson.attribution || ""),
      ...options });
  }

  function drawLegend(legend) {
    const [lo, hi] = legend.rescale, units = esc(legend.units);
    const stops = legend.stops.map((s) => `${s.color} ${(100 * (s.value - lo) / (hi - lo || 1)).toFixed(1)}%`);
    $("legend").innerHTML = `<div class="small">${esc(legend.variable)} (${units})</div>
      <div class="bar" style="background: linear-gradient(to right, ${stops.join(", ")})"></div>
      <div class="ends"><span>${fmt(lo)} ${units}</span><span>${fmt(hi)} ${units}</span></div>`;
  }

  async function drawBase() {
    const url = localStorage.getItem(BASEMAP_KEY) || "";
    $("basemap").value = url;
    if (state.base) state.map.removeLayer(state.base);
    state.base = null;
    try {
      if (url) {
        state.base = L.tileLayer(url, { zIndex: 1, maxZoom: 19 });
      } else { // land outlines from the cube's own land mask
        const params = new URLSearchParams({ cube: state.cube.name, variable: "land_mask" });
        state.base = tileLayer(await getJSON(`/tiles/tilejson.json?${params}`), { zIndex: 1, opacity: 0.6 });
      }
      state.base.addTo(state.map);
    } catch (e) {
      status(`The basemap: ${e.message}`, true);
    }
  }

  // ---- a pixel's series ----
  async function showPoint(latlng) {
    const where = latlng.wrap(), name = baseVariable();
    const params = new URLSearchParams({ lat: where.lat.toFixed(4), lon: where.lng.toFixed(4), cube: state.cube.name });
    $("point-info").textContent = `Loading the series at ${where.lat.toFixed(3)}° N, ${where.lng.toFixed(3)}° E ...`;
    try {
      const series = await getJSON(`/flux?${params}`);
      state.series = series;
      if (state.point) state.map.removeLayer(state.point);
      state.point = L.circleMarker([series.cell_lat, series.cell_lon], { radius: 5, color: "#000" }).addTo(state.map);
      drawChart(series, name);
    } catch (e) {
      $("point-info").innerHTML = `<span class="error">${esc(e.message)}</span>`;
    }
  }

  function drawChart(series, name) {
    const v = series.variables[name], units = series.units;
    const x = series.time.map((t) => Date.parse(t) / 1000);
    const plus = (sign) => v.values.map((m, i) => (m === null || v.std[i] === null ? null : m + sign * v.std[i]));
    const value = (u, y) => (y === null || y === undefined ? "–" : `${y.toFixed(2)} ${units}`);
    const data = [x, plus(1), plus(-1), v.values];
    const lines = [{}, { label: "mean + std", stroke: "rgba(31,119,180,0.35)", value },
      { label: "mean − std", stroke: "rgba(31,119,180,0.35)", value },
      { label: `${name} ensemble mean`, stroke: "#1f77b4", width: 2, value }];
    const calibrated = Array.isArray(v.p05) && Array.isArray(v.p95);
    if (calibrated) {
      data.push(v.p95, v.p05);
      lines.push({ label: "calibrated p95", stroke: "#d62728", dash: [4, 3], value },
        { label: "calibrated p05", stroke: "#d62728", dash: [4, 3], value });
    }
    if (state.chart) state.chart.destroy();
    $("chart").innerHTML = "";
    state.chart = new uPlot({ width: 340, height: 200, series: lines,
      bands: [{ series: [1, 2], fill: "rgba(31,119,180,0.18)" }],
      axes: [{}, { label: `${name} (${units})`, size: 50 }] }, data, $("chart"));
    const known = v.values.filter((y) => y !== null), member = state.cube.ensemble_size;
    const mean = known.length ? known.reduce((a, b) => a + b, 0) / known.length : null;
    $("point-info").innerHTML = `Cell ${series.cell_lat.toFixed(3)}° N, ${series.cell_lon.toFixed(3)}° E (IGBP class
      ${series.igbp}), ${esc(series.time[0])} to ${esc(series.time[series.time.length - 1])}: mean ${name}
      <b>${fmt(mean)} ${esc(units)}</b>. Band: the ensemble mean ± one standard deviation over ${member} members${
      calibrated ? "; dashed: the calibrated 90% interval" : ""}.`;
    if (!known.length) $("point-info").innerHTML += ' <span class="error">Not computed here (water).</span>';
  }

  // ---- a region's totals ----
  async function showTotals(text, layer) {
    if (state.regions) state.map.removeLayer(state.regions);
    state.regions = layer ? layer.addTo(state.map) : null;
    const params = new URLSearchParams({ cube: state.cube.name, variables: FLUXES.join(",") });
    const days = period();
    if (days.start) { params.set("start", days.start); params.set("end", days.end); }
    $("totals").textContent = "Computing the totals ...";
    try {
      const answer = await getJSON(`/flux/region?${params}`,
        { method: "POST", headers: { "content-type": "application/geo+json" }, body: text });
      state.totals = answer;
      $("totals").innerHTML = answer.features.map((f) => featureTotals(answer, f)).join("");
    } catch (e) {
      $("totals").innerHTML = `<span class="error">${esc(e.message)}</span>`;
    }
  }

  function featureTotals(answer, feature) {
    const u = answer.units, row = feature.rows[0], name = feature.id === null ? `Region ${feature.index + 1}` : feature.id;
    const range = (a, b) => (a === null || a === undefined ? "" : `${fmt(a)} to ${fmt(b)} ${esc(u.total)}`);
    const rows = answer.variables.map((v) => {
      const s = row[v], cal = range(s.total_cal_p05, s.total_cal_p95);
      return `<tr><th>${v}</th><td class="total" data-variable="${v}">${fmt(s.total)} ± ${fmt(s.total_std)}
        ${esc(u.total)}</td><td>members 5–95%: ${range(s.total_p05, s.total_p95) || "n/a"}${
        cal ? `<br>calibrated 90%: ${cal}` : ""}<br>mean ${fmt(s.mean)} ${esc(u.mean)}</td></tr>`;
    });
    return `<p><b>${esc(name)}</b>, ${esc(answer.start)} to ${esc(answer.end)}: ${fmt(feature.area_km2)} ${esc(u.area)},
      of which ${fmt(feature.computed_area_km2)} ${esc(u.area)} computed (the rest is water or outside the cube).
      ± is the ensemble members' standard deviation.</p><table>${rows.join("")}</table>`;
  }

  // ---- the cube ----
  function selectCube(name) {
    const c = state.cubes.find((cube) => cube.name === name);
    state.cube = c;
    $("banner").hidden = !c.synthetic;
    $("banner").textContent = c.synthetic ? `Cube ${c.name} was made from synthetic drivers (invented weather and ` +
      "reflectance): its values are not real fluxes." : "";
    $("cube-info").textContent = `${c.start} to ${c.end}; W, S, E, N ${c.bbox.join(", ")}°; ${c.ensemble_size} ` +
      `ensemble members; checkpoint ${c.checkpoint}.`;
    state.days = dayList(c.start, c.end);
    $("day").max = state.days.length - 1;
    $("day").value = Math.floor((state.days.length - 1) / 2);
    $("day-label").textContent = state.days[+$("day").value];
    for (const id of ["start", "end"]) { $(id).min = c.start; $(id).max = c.end; }
    $("start").value = c.start;
    $("end").value = c.end;
    state.map.fitBounds([[c.bbox[1], c.bbox[0]], [c.bbox[3], c.bbox[2]]]);
    drawBase();
    drawMap();
  }

  async function main() {
    const map = L.map("map", { zoomSnap: 0.25 }).setView([47.5, 10], 5);
    state.map = map;
    map.pm.addControls({ position: "topleft", drawMarker: false, drawCircleMarker: false, drawPolyline: false,
      drawCircle: false, drawText: false, editMode: false, dragMode: false, cutPolygon: false, removalMode: false,
      rotateMode: false });
    map.on("pm:create", (e) => {
      const geojson = e.layer.toGeoJSON();
      map.removeLayer(e.layer);
      showTotals(JSON.stringify(geojson), L.geoJSON(geojson, { interactive: false }));
    });
    map.on("click", (e) => { if (!map.pm.globalDrawModeEnabled()) showPoint(e.latlng); });
    $("cube").addEventListener("change", (e) => selectCube(e.target.value));
    $("variable").addEventListener("change", () => {
      drawMap();
      if (state.series) drawChart(state.series, baseVariable());
    });
    for (const radio of document.querySelectorAll("input[name=mode]")) {
      radio.addEventListener("change", () => {
        $("day-controls").hidden = mode() !== "day";
        $("period-controls").hidden = mode() === "day";
        drawMap();
      });
    }
    $("day").addEventListener("input", () => { $("day-label").textContent = state.days[+$("day").value]; });
    $("day").addEventListener("change", drawMap);
    for (const id of ["start", "end"]) $(id).addEventListener("change", drawMap);
    $("regions-file").addEventListener("change", async (e) => {
      const file = e.target.files[0];
      if (!file) return;
      const text = await file.text();
      let layer = null;
      try { layer = L.geoJSON(JSON.parse(text), { interactive: false }); } catch (err) { layer = null; } // the service says why
      showTotals(text, layer);
    });
    $("basemap-save").addEventListener("click", () => {
      localStorage.setItem(BASEMAP_KEY, $("basemap").value.trim());
      drawBase();
    });
    $("basemap-clear").addEventListener("click", () => { localStorage.removeItem(BASEMAP_KEY); drawBase(); });
    for (const v of FLUXES) $("variable").add(new Option(v, v));
    for (const v of FLUXES) $("variable").add(new Option(`${v} ensemble spread (std)`, `${v}_std`));

    try {
      state.cubes = await getJSON("/cubes");
    } catch (e) {
      status(`The cubes: ${e.message}`, true);
      return;
    }
    if (!state.cubes.length) { status("No cube is served yet: run tamrl upscale or POST /upscale.", true); return; }
    for (const c of state.cubes) $("cube").add(new Option(`${c.name}${c.synthetic ? " (synthetic)" : ""}`, c.name));
    selectCube(state.cubes[0].name);
  }

  main();
})();
