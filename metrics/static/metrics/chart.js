/* The admin's chart page: reads the controls, keeps them in the URL, fetches the buckets as
 * JSON from the admin's data view (the query API's answer) and draws them with uPlot.
 *
 * What was drawn is left on the page for whoever needs to check it: `window.gfChart` holds the
 * bucket starts and each series' values, and the chart element carries data-state
 * (loading/ready/error), data-buckets, data-series and data-draws.
 */
(function () {
  "use strict";

  var RANGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
  var DEFAULT_INTERVAL = { "1h": "minute", "24h": "hour", "7d": "hour", "30d": "day" };
  var REFRESH_MS = 30000;
  var PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  ];

  var chartEl = document.getElementById("gf-chart");
  var config = JSON.parse(chartEl.dataset.config);
  var $ = function (id) { return document.getElementById(id); };
  var controls = {
    range: $("gf-range"), from: $("gf-from"), to: $("gf-to"), custom: $("gf-custom"),
    interval: $("gf-interval"), aggregation: $("gf-aggregation"), tz: $("gf-tz"),
    groupBy: $("gf-group-by"), refresh: $("gf-refresh"), reload: $("gf-reload"),
    status: $("gf-status"),
  };
  var tagSelects = Array.prototype.slice.call(document.querySelectorAll("select.gf-tag"));
  var plot = null;
  var draws = 0;
  var sequence = 0;
  var timer = null;

  // --- time zones ----------------------------------------------------------------------------

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (e) {
      return "UTC";
    }
  }

  function fillZones(selected) {
    var zones = ["UTC"];
    if (typeof Intl.supportedValuesOf === "function") {
      zones = zones.concat(Intl.supportedValuesOf("timeZone").filter(function (z) { return z !== "UTC"; }));
    }
    if (zones.indexOf(selected) < 0) zones.push(selected);
    var fragment = document.createDocumentFragment();
    zones.forEach(function (zone) {
      var option = document.createElement("option");
      option.value = zone;
      option.textContent = zone;
      fragment.appendChild(option);
    });
    controls.tz.appendChild(fragment);
    controls.tz.value = selected;
  }

  // Offset of `zone` from UTC, in ms, at instant `ms`.
  function zoneOffset(ms, zone) {
    var parts = {};
    new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    }).formatToParts(new Date(ms)).forEach(function (p) { parts[p.type] = p.value; });
    var asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    return asUtc - Math.floor(ms / 1000) * 1000;
  }

  // "2026-03-29T02:30" read as a wall-clock time in `zone` -> an ISO 8601 instant with "Z".
  function wallToIso(wall, zone) {
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(wall);
    if (!m) return null;
    var guess = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
    var ms = guess - zoneOffset(guess, zone);
    ms = guess - zoneOffset(ms, zone);
    return new Date(ms).toISOString();
  }

  // An instant -> "YYYY-MM-DDTHH:MM" on the wall clock of `zone` (for datetime-local inputs).
  function isoToWall(iso, zone) {
    var ms = Date.parse(iso);
    if (isNaN(ms)) return "";
    return new Date(ms + zoneOffset(ms, zone)).toISOString().slice(0, 16);
  }

  // --- state <-> URL ---------------------------------------------------------------------------

  function readUrl() {
    var q = new URLSearchParams(window.location.search);
    var range = q.get("range");
    if (!(range in RANGES) && range !== "custom") range = "24h";
    var state = {
      range: range,
      from: q.get("from") || "",
      to: q.get("to") || "",
      interval: q.get("interval") || DEFAULT_INTERVAL[range] || "hour",
      aggregation: q.get("aggregation") || config.aggregations[0],
      tz: q.get("tz") || browserZone(),
      tags: q.getAll("tag"),
      groupBy: q.get("group_by") || "",
      refresh: q.get("refresh") === "1",
    };
    return state;
  }

  function applyState(state) {
    controls.range.value = state.range;
    controls.custom.hidden = state.range !== "custom";
    controls.interval.value = state.interval;
    if (controls.interval.value !== state.interval) controls.interval.value = "hour";
    controls.aggregation.value = state.aggregation;
    if (controls.aggregation.value !== state.aggregation) {
      controls.aggregation.value = config.aggregations[0];
    }
    controls.tz.value = state.tz;
    var chosen = {};
    state.tags.forEach(function (pair) {
      var i = pair.indexOf(":");
      if (i > 0) chosen[pair.slice(0, i)] = pair.slice(i + 1);
    });
    tagSelects.forEach(function (select) {
      select.value = chosen[select.dataset.key] || "";
    });
    controls.groupBy.value = state.groupBy;
    controls.refresh.checked = state.refresh;
    if (state.range === "custom") {
      controls.from.value = isoToWall(state.from, state.tz);
      controls.to.value = isoToWall(state.to, state.tz);
    }
  }

  function currentState() {
    var tz = controls.tz.value || "UTC";
    var state = {
      range: controls.range.value,
      from: "",
      to: "",
      interval: controls.interval.value,
      aggregation: controls.aggregation.value,
      tz: tz,
      tags: tagSelects.filter(function (s) { return s.value; }).map(function (s) {
        return s.dataset.key + ":" + s.value;
      }),
      groupBy: controls.groupBy.value,
      refresh: controls.refresh.checked,
    };
    if (state.range === "custom") {
      state.from = wallToIso(controls.from.value, tz) || "";
      state.to = wallToIso(controls.to.value, tz) || "";
    }
    return state;
  }

  function writeUrl(state) {
    var q = new URLSearchParams();
    q.set("range", state.range);
    if (state.range === "custom") {
      q.set("from", state.from);
      q.set("to", state.to);
    }
    q.set("interval", state.interval);
    q.set("aggregation", state.aggregation);
    q.set("tz", state.tz);
    state.tags.forEach(function (t) { q.append("tag", t); });
    if (state.groupBy) q.set("group_by", state.groupBy);
    if (state.refresh) q.set("refresh", "1");
    window.history.replaceState(null, "", window.location.pathname + "?" + q.toString());
  }

  // The query string of the data view: the query API's own parameters.
  function dataQuery(state) {
    var q = new URLSearchParams();
    if (state.range === "custom") {
      if (state.from) q.set("from", state.from);
      if (state.to) q.set("to", state.to);
    } else {
      // Whole minutes, so a week of minute buckets is exactly 10,080 of them.
      var to = Math.ceil(Date.now() / 60000) * 60;
      q.set("from", new Date((to - RANGES[state.range]) * 1000).toISOString());
      q.set("to", new Date(to * 1000).toISOString());
    }
    q.set("interval", state.interval);
    q.set("aggregation", state.aggregation);
    q.set("tz", state.tz);
    state.tags.forEach(function (t) { q.append("tag", t); });
    if (state.groupBy) q.set("group_by", state.groupBy);
    return q;
  }

  // --- drawing ---------------------------------------------------------------------------------

  function toSeries(body) {
    var source = body.groups
      ? body.groups.map(function (g) {
          var value = g.tags[body.group_by];
          return { label: body.group_by + "=" + (value === null ? "(none)" : value), buckets: g.buckets };
        })
      : [{ label: body.aggregation, buckets: body.buckets }];
    var first = source.length ? source[0].buckets : body.buckets || [];
    return {
      starts: first.map(function (b) { return b.start; }),
      series: source.map(function (s) {
        return { label: s.label, values: s.buckets.map(function (b) { return b.value; }) };
      }),
    };
  }

  function setStatus(text, isError) {
    controls.status.textContent = text;
    controls.status.classList.toggle("gf-error", Boolean(isError));
  }

  function draw(body, url) {
    var shape = toSeries(body);
    var xs = shape.starts.map(function (s) { return Date.parse(s) / 1000; });
    var data = [xs].concat(shape.series.map(function (s) { return s.values; }));
    var tz = body.tz;
    var many = xs.length > 500;
    var options = {
      width: Math.max(chartEl.clientWidth, 300),
      height: 420,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), tz); },
      scales: { x: { time: true } },
      legend: { show: true },
      cursor: { drag: { x: true, y: false } },
      series: [{ label: "time (" + tz + ")" }].concat(
        shape.series.map(function (s, i) {
          return {
            label: s.label,
            stroke: PALETTE[i % PALETTE.length],
            width: 1.5,
            points: { show: !many },
            spanGaps: false,
          };
        })
      ),
      axes: [{}, { size: 70 }],
    };
    if (plot) plot.destroy();
    chartEl.textContent = "";
    if (shape.series.length === 0) {
      chartEl.textContent = "No points in this range.";
    } else {
      plot = new uPlot(options, data, chartEl);
    }
    draws += 1;
    window.gfChart = {
      url: url,
      interval: body.interval,
      aggregation: body.aggregation,
      tz: body.tz,
      groupBy: body.group_by || null,
      starts: shape.starts,
      series: shape.series,
      draws: draws,
    };
    chartEl.dataset.state = "ready";
    chartEl.dataset.buckets = String(xs.length);
    chartEl.dataset.series = String(shape.series.length);
    chartEl.dataset.draws = String(draws);
    setStatus(xs.length + " buckets of one " + body.interval + ", " + body.aggregation + ", " + tz, false);
  }

  function load() {
    var state = currentState();
    writeUrl(state);
    if (state.range === "custom" && (!state.from || !state.to)) {
      setStatus("Choose both ends of the custom range.", true);
      return;
    }
    var url = config.dataUrl + "?" + dataQuery(state).toString();
    var mine = ++sequence;
    chartEl.dataset.state = "loading";
    setStatus("Loading…", false);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      })
      .then(function (result) {
        if (mine !== sequence) return; // a newer request was sent meanwhile
        if (!result.ok) {
          chartEl.dataset.state = "error";
          setStatus(result.body.detail || result.body.title || "The query failed.", true);
          return;
        }
        draw(result.body, url);
      })
      .catch(function (error) {
        if (mine !== sequence) return;
        chartEl.dataset.state = "error";
        setStatus("The data could not be loaded: " + error.message, true);
      });
  }

  function scheduleRefresh() {
    if (timer) window.clearInterval(timer);
    timer = controls.refresh.checked ? window.setInterval(load, REFRESH_MS) : null;
  }

  // --- wiring ----------------------------------------------------------------------------------

  var initial = readUrl();
  fillZones(initial.tz);
  applyState(initial);

  controls.range.addEventListener("change", function () {
    var range = controls.range.value;
    controls.custom.hidden = range !== "custom";
    if (range === "custom") {
      var tz = controls.tz.value;
      var now = Date.now();
      if (!controls.to.value) controls.to.value = isoToWall(new Date(now).toISOString(), tz);
      if (!controls.from.value) controls.from.value = isoToWall(new Date(now - 86400000).toISOString(), tz);
    } else {
      controls.interval.value = DEFAULT_INTERVAL[range];
    }
    load();
  });
  // A custom range keeps its instants when the zone changes: its wall-clock ends move instead.
  var shownTz = controls.tz.value;
  controls.tz.addEventListener("change", function () {
    if (controls.range.value === "custom") {
      [controls.from, controls.to].forEach(function (input) {
        var iso = wallToIso(input.value, shownTz);
        if (iso) input.value = isoToWall(iso, controls.tz.value);
      });
    }
    shownTz = controls.tz.value;
    load();
  });
  [controls.from, controls.to, controls.interval, controls.aggregation, controls.groupBy]
    .concat(tagSelects)
    .forEach(function (el) { el.addEventListener("change", load); });
  controls.refresh.addEventListener("change", function () {
    scheduleRefresh();
    writeUrl(currentState());
  });
  controls.reload.addEventListener("click", load);
  window.addEventListener("resize", function () {
    if (plot) plot.setSize({ width: Math.max(chartEl.clientWidth, 300), height: 420 });
  });

  scheduleRefresh();
  load();
})();
