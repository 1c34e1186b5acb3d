"""The upload page served at ``GET /``: plain HTML and JavaScript, no build step, no external assets.

Kept as a Python string so it ships inside the package without package-data configuration.
"""

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resnetkit</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 56rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  #model { color: #666; margin-bottom: 1.2rem; }
  #drop { border: 2px dashed #aaa; border-radius: 8px; padding: 1.5rem; text-align: center; cursor: pointer; }
  #drop.over { border-color: #2a7; background: #f3fbf6; }
  .result { display: flex; gap: 1rem; margin-top: 1.2rem; align-items: flex-start; }
  .result figure { margin: 0; position: relative; }
  .result img { max-width: 16rem; max-height: 16rem; display: block; image-rendering: auto; }
  .result figcaption { position: absolute; top: 0; left: 0; right: 0; background: rgba(0,0,0,.65);
                       color: #fff; padding: .2rem .4rem; font-weight: 600; }
  .bars { flex: 1; }
  .bar { display: flex; align-items: center; gap: .5rem; margin: .2rem 0; }
  .bar .label { width: 12rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar .track { flex: 1; background: #eee; height: .9rem; border-radius: 3px; }
  .bar .fill { background: #2a7; height: 100%; border-radius: 3px; }
  .bar .pct { width: 4rem; text-align: right; font-variant-numeric: tabular-nums; }
  .error { color: #b00; }
</style>
</head>
<body>
<h1>resnetkit</h1>
<div id="model">loading model information...</div>
<div id="drop">Drop images here, or click to choose
  <input id="files" type="file" accept="image/*" multiple hidden>
</div>
<div id="results"></div>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("files");
const results = document.getElementById("results");

fetch("model").then(r => r.json()).then(m => {
  const p = m.preprocess;
  document.getElementById("model").textContent =
    `${m.arch}, ${m.num_classes} classes, input ${p.input_size}x${p.input_size} (resize ${p.resize_size})`;
});

drop.onclick = () => input.click();
input.onchange = () => send(input.files);
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files); };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function send(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  results.replaceChildren(el("p", "", "classifying..."));
  let body;
  try {
    const response = await fetch("predict", { method: "POST", body: form });
    body = await response.json();
    if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  } catch (err) {
    results.replaceChildren(el("p", "error", String(err.message || err)));
    return;
  }
  results.replaceChildren();
  body.predictions.forEach((p, i) => {
    const row = el("div", "result"), figure = el("figure");
    const img = el("img");
    img.src = URL.createObjectURL(files[i]);
    img.alt = p.source;
    figure.append(img);
    const bars = el("div", "bars");
    bars.append(el("div", "", p.source));
    if (p.error) {
      bars.append(el("div", "error", p.error));
    } else {
      figure.append(el("figcaption", "", `${p.labels[0]} ${(100 * p.probabilities[0]).toFixed(1)}%`));
      p.labels.forEach((label, k) => {
        const bar = el("div", "bar"), track = el("div", "track"), fill = el("div", "fill");
        fill.style.width = `${100 * p.probabilities[k]}%`;
        track.append(fill);
        bar.append(el("span", "label", label), track, el("span", "pct", `${(100 * p.probabilities[k]).toFixed(1)}%`));
        bars.append(bar);
      });
    }
    row.append(figure, bars);
    results.append(row);
  });
}
</script>
</body>
</html>
"""
