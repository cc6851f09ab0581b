// The lrpfn report's page: reads window.LRPFN_REPORT (data/report.js, written by
// lrpfn.report.write) and builds the three sections. Charts are Plotly's; everything else
// is plain DOM. No network: every file is next to this one.
(function () {
  "use strict";

  const data = window.LRPFN_REPORT;
  const samples = new Map(data.samples.map((sample) => [sample.row, sample]));
  const PAGE = 48; // samples per page of the gallery
  const SHOWN = 60; // samples shown for a selection
  // lrpfn.image.BWR: blue (negative), white (zero), red (positive)
  const BWR = [[0, "#0000ff"], [0.5, "#ffffff"], [1, "#ff0000"]];
  const CONFIG = { displaylogo: false, responsive: true };

  function element(tag, attributes, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  function button(label, attributes, onClick) {
    const node = element("button", Object.assign({ type: "button", text: label }, attributes));
    node.addEventListener("click", onClick);
    return node;
  }

  function activate(container, active) {
    for (const node of container.querySelectorAll("button")) node.classList.remove("active");
    if (active) active.classList.add("active");
  }

  function describe(row, names) {
    const sample = samples.get(row);
    if (sample) {
      const parts = [`#${row}`, `label ${sample.label_name || "none"}`];
      if (sample.valid) parts.push(`explained ${sample.target_name}`);
      else parts.push("not explained");
      return parts.join(" · ");
    }
    const atlasRow = data.atlas && data.atlas.rows[String(row)];
    return atlasRow ? `#${row} · label ${atlasRow.label_name || "none"}` : `#${row}`;
  }

  function pathOf(row) {
    const sample = samples.get(row);
    if (sample) return sample.path;
    const atlasRow = data.atlas && data.atlas.rows[String(row)];
    return atlasRow ? atlasRow.path : "";
  }

  // A sample's card: input, heatmap and overlay, with what the row is.
  function sampleCard(row, note) {
    const sample = samples.get(row);
    const images = [];
    for (const kind of ["input", "heatmap", "overlay"]) {
      if (sample && sample.images[kind]) {
        images.push(element("img", { src: sample.images[kind], alt: `${kind} of sample ${row}`, class: kind }));
      }
    }
    const caption = element("figcaption", { text: describe(row) + (note ? ` · ${note}` : "") });
    const path = pathOf(row);
    if (path) caption.title = path;
    return element("figure", { class: "sample", "data-row": String(row) }, [...images, caption]);
  }

  function percentile(values, q) {
    const magnitudes = values.map(Math.abs).sort((a, b) => a - b);
    if (!magnitudes.length) return 0;
    const position = (q / 100) * (magnitudes.length - 1);
    const low = Math.floor(position);
    const high = Math.min(low + 1, magnitudes.length - 1);
    return magnitudes[low] + (magnitudes[high] - magnitudes[low]) * (position - low);
  }

  // A relevance map as a Plotly heatmap, symmetric around zero, clipped at the percentile.
  function drawMap(target, rows, title) {
    const flat = rows.flat();
    let scale = percentile(flat, data.percentile);
    if (!(scale > 0)) scale = Math.max(...flat.map(Math.abs), 0) || 1;
    const trace = { type: "heatmap", z: rows, colorscale: BWR, zmin: -scale, zmax: scale, zmid: 0 };
    const layout = {
      title: { text: title, font: { size: 12 } },
      margin: { l: 30, r: 10, t: 30, b: 30 },
      yaxis: { autorange: "reversed", scaleanchor: "x", showticklabels: false },
      xaxis: { showticklabels: false },
    };
    Plotly.react(target, [trace], layout, CONFIG);
  }

  // --- tabs ---------------------------------------------------------------------------
  const tabs = document.getElementById("tabs");
  const sections = [];
  if (data.samples.length) sections.push(["samples", "Samples"]);
  if (data.spray.length) sections.push(["spray", "SpRAy"]);
  if (data.atlas) sections.push(["atlas", "Atlas"]);
  const shownOnce = new Set();

  function showTab(name) {
    for (const [id] of sections) document.getElementById(id).hidden = id !== name;
    activate(tabs, tabs.querySelector(`[data-tab="${name}"]`));
    if (!shownOnce.has(name)) {
      shownOnce.add(name);
      ({ samples: renderSamples, spray: renderSpray, atlas: renderAtlas })[name]();
    }
  }

  for (const [id, label] of sections) {
    tabs.appendChild(button(label, { "data-tab": id, id: `tab-${id}` }, () => showTab(id)));
  }

  // --- samples ------------------------------------------------------------------------
  function renderSamples() {
    const select = document.getElementById("samples-class");
    const grid = document.getElementById("samples-grid");
    const count = document.getElementById("samples-count");
    const labels = [...new Set(data.gallery.map((row) => samples.get(row).label))].sort((a, b) => a - b);
    select.appendChild(element("option", { value: "all", text: "all" }));
    for (const label of labels) {
      const name = samples.get(data.gallery.find((row) => samples.get(row).label === label)).label_name;
      select.appendChild(element("option", { value: String(label), text: name || "none" }));
    }
    let page = 0;
    function rows() {
      if (select.value === "all") return data.gallery;
      return data.gallery.filter((row) => samples.get(row).label === Number(select.value));
    }
    function draw() {
      const all = rows();
      const pages = Math.max(1, Math.ceil(all.length / PAGE));
      page = Math.min(Math.max(page, 0), pages - 1);
      grid.replaceChildren(...all.slice(page * PAGE, (page + 1) * PAGE).map((row) => sampleCard(row)));
      count.textContent = `${all.length} samples · page ${page + 1} of ${pages}`;
    }
    select.addEventListener("change", () => { page = 0; draw(); });
    document.getElementById("samples-previous").addEventListener("click", () => { page -= 1; draw(); });
    document.getElementById("samples-next").addEventListener("click", () => { page += 1; draw(); });
    draw();
  }

  // --- SpRAy --------------------------------------------------------------------------
  function renderSpray() {
    const classes = document.getElementById("spray-classes");
    for (const [number, section] of data.spray.entries()) {
      const node = button(`class ${section.name} (${section.rows.length})`,
        { class: "spray-class", "data-class": String(section.class) },
        () => { activate(classes, node); drawScatter(section); });
      if (number === 0) setTimeout(() => node.click(), 0);
      classes.appendChild(node);
    }
  }

  function clusterCount(section) {
    return Math.max(...section.clusters) + 1;
  }

  function drawScatter(section) {
    const traces = [];
    for (let cluster = 0; cluster < clusterCount(section); cluster += 1) {
      const members = section.rows.map((row, i) => i).filter((i) => section.clusters[i] === cluster);
      traces.push({
        type: "scatter",
        mode: "markers",
        name: `cluster ${cluster} (${members.length})`,
        x: members.map((i) => section.x[i]),
        y: members.map((i) => section.y[i]),
        customdata: members.map((i) => section.rows[i]),
        hovertemplate: "sample %{customdata}<extra>cluster " + cluster + "</extra>",
        marker: { size: 7 },
      });
    }
    const layout = {
      title: { text: `class ${section.name}: t-SNE of the heatmaps`, font: { size: 13 } },
      dragmode: "select",
      margin: { l: 30, r: 10, t: 40, b: 30 },
      xaxis: { showticklabels: false, zeroline: false },
      yaxis: { showticklabels: false, zeroline: false },
      legend: { orientation: "h" },
    };
    const plot = document.getElementById("spray-plot");
    Plotly.purge(plot); // drops the listeners of the class shown before
    Plotly.newPlot(plot, traces, layout, CONFIG).then(() => {
      plot.on("plotly_selected", (event) => {
        if (!event || !event.points.length) return;
        const rows = event.points.map((point) => point.customdata);
        showSelection(section, rows, `${rows.length} selected samples of class ${section.name}`);
        activate(document.getElementById("spray-clusters"), null);
      });
      plot.on("plotly_click", (event) => {
        const point = event.points[0];
        selectCluster(section, point.curveNumber);
      });
      plot.on("plotly_legendclick", (event) => {
        selectCluster(section, event.curveNumber);
        return false; // select the cluster instead of hiding it
      });
    });
    const buttons = document.getElementById("spray-clusters");
    buttons.replaceChildren();
    for (let cluster = 0; cluster < clusterCount(section); cluster += 1) {
      buttons.appendChild(button(`cluster ${cluster}`, { class: "cluster", "data-cluster": String(cluster) },
        () => selectCluster(section, cluster)));
    }
    selectCluster(section, 0);
  }

  function selectCluster(section, cluster) {
    const rows = section.rows.filter((row, i) => section.clusters[i] === cluster);
    showSelection(section, rows, `cluster ${cluster} of class ${section.name}: ${rows.length} samples`);
    const buttons = document.getElementById("spray-clusters");
    activate(buttons, buttons.querySelector(`[data-cluster="${cluster}"]`));
  }

  // The samples of a selection and their mean heatmap (the mean of their pooled maps).
  function showSelection(section, rows, caption) {
    const position = new Map(section.rows.map((row, i) => [row, i]));
    const [height, width] = section.size;
    const mean = new Array(height * width).fill(0);
    for (const row of rows) {
      const map = section.maps[position.get(row)];
      for (let p = 0; p < mean.length; p += 1) mean[p] += (map[p] * section.scale) / rows.length;
    }
    const grid = [];
    for (let y = 0; y < height; y += 1) grid.push(mean.slice(y * width, (y + 1) * width));
    document.getElementById("spray-caption").textContent = caption;
    const selection = document.getElementById("spray-samples");
    selection.dataset.rows = rows.join(",");
    drawMap("spray-mean", grid, "mean heatmap");
    const cards = [...rows].sort((a, b) => a - b).slice(0, SHOWN).map((row) => sampleCard(row));
    if (rows.length > SHOWN) {
      cards.push(element("p", { class: "note", text: `the first ${SHOWN} of ${rows.length} samples` }));
    }
    selection.replaceChildren(...cards);
  }

  // --- atlas --------------------------------------------------------------------------
  const ORDERING_NAMES = {
    relevance_sum: "relevance (sum)",
    relevance_max: "relevance (max)",
    activation_sum: "activation (sum)",
    activation_max: "activation (max)",
  };
  let atlasLayer = null;
  let atlasChannel = 0;

  function classNames(count) {
    const names = data.class_names || [];
    return Array.from({ length: count }, (_, c) => (names[c] !== undefined ? String(names[c]) : String(c)));
  }

  function renderAtlas() {
    const layers = document.getElementById("atlas-layers");
    const ordering = document.getElementById("atlas-ordering");
    for (const [number, layer] of data.atlas.layers.entries()) {
      const node = button(`${layer.name} (${layer.channels} ${layer.kind}s)`,
        { class: "layer", "data-layer": String(number) },
        () => { activate(layers, node); selectLayer(layer); });
      layers.appendChild(node);
    }
    ordering.addEventListener("change", () => selectChannel(atlasLayer, atlasChannel));
    layers.querySelector("button").click();
  }

  function selectLayer(layer) {
    atlasLayer = layer;
    const ordering = document.getElementById("atlas-ordering");
    ordering.replaceChildren(...Object.keys(layer.orderings).map((name) =>
      element("option", { value: name, text: ORDERING_NAMES[name] || name })));
    const classes = layer.class_relevance.length;
    const plot = document.getElementById("atlas-classes");
    Plotly.purge(plot);
    const trace = {
      type: "heatmap",
      z: layer.class_relevance,
      y: classNames(classes),
      colorscale: BWR,
      zmid: 0,
      hovertemplate: `class %{y}, ${layer.kind} %{x}: %{z}<extra></extra>`,
    };
    const layout = {
      title: { text: `${layer.name}: mean relevance of each ${layer.kind} per class (click a column)`, font: { size: 12 } },
      margin: { l: 60, r: 10, t: 30, b: 30 },
      yaxis: { type: "category", autorange: "reversed" },
    };
    Plotly.newPlot(plot, [trace], layout, CONFIG).then(() => {
      plot.on("plotly_click", (event) => selectChannel(layer, event.points[0].x));
    });
    const channels = document.getElementById("atlas-channels");
    channels.replaceChildren();
    for (let channel = 0; channel < layer.channels; channel += 1) {
      channels.appendChild(button(String(channel), { class: "channel", "data-channel": String(channel) },
        () => selectChannel(layer, channel)));
    }
    selectChannel(layer, 0);
  }

  function selectChannel(layer, channel) {
    atlasChannel = channel;
    const channels = document.getElementById("atlas-channels");
    activate(channels, channels.querySelector(`[data-channel="${channel}"]`));
    document.getElementById("atlas-caption").textContent = `${layer.name} · ${layer.kind} ${channel}`;
    const panel = document.getElementById("atlas-channel");
    panel.dataset.layer = layer.name;
    panel.dataset.channel = String(channel);
    const references = document.getElementById("atlas-references");
    const shown = layer.references ? layer.references[channel] : [];
    references.replaceChildren(...shown.map((reference) => referenceCard(reference)));
    if (!layer.references) {
      references.appendChild(element("p", { class: "note", text: "no reference crops in this store (lrpfn atlas writes them after the run)" }));
    }
    const column = layer.class_relevance.map((values) => values[channel]);
    Plotly.react("atlas-bars", [{ type: "bar", x: classNames(column.length), y: column, marker: { color: column.map((v) => (v >= 0 ? "#d33" : "#33d")) } }],
      { title: { text: "mean relevance per class", font: { size: 12 } }, margin: { l: 40, r: 10, t: 30, b: 40 }, xaxis: { type: "category" } }, CONFIG);
    const name = document.getElementById("atlas-ordering").value;
    const top = document.getElementById("atlas-top");
    const ordering = layer.orderings[name];
    const cards = [];
    if (ordering) {
      ordering.indices[channel].forEach((row, rank) => {
        if (row < 0) return;
        const score = ordering.scores[channel][rank];
        const note = `score ${score === null ? "n/a" : Number(score).toPrecision(3)}`;
        cards.push(data.atlas.linked ? sampleCard(row, note) : textCard(row, note));
      });
    }
    top.replaceChildren(...cards);
  }

  function textCard(row, note) {
    const caption = element("figcaption", { text: `${describe(row)} · ${note}` });
    const path = pathOf(row);
    if (path) caption.title = path;
    return element("figure", { class: "sample", "data-row": String(row) }, [caption]);
  }

  function referenceCard(reference) {
    const caption = element("figcaption", { text: describe(reference.row) });
    const path = pathOf(reference.row);
    if (path) caption.title = path;
    if (reference.tokens) {
      const text = element("div", { class: "tokens" }, reference.tokens.map(([token, color, value]) =>
        element("span", { style: `background:${color}`, title: String(value), text: token + " " })));
      return element("figure", { class: "reference", "data-row": String(reference.row) }, [text, caption]);
    }
    const images = ["image", "heatmap", "overlay"].map((kind) =>
      element("img", { src: reference[kind], alt: `${kind} of sample ${reference.row}`, class: kind }));
    return element("figure", { class: "reference", "data-row": String(reference.row) }, [...images, caption]);
  }

  if (sections.length) showTab(sections[0][0]);
})();
