"""The page served at ``GET /``: plain HTML and JavaScript, no build step, no external assets.

Kept as a Python string so it ships inside the package without package-data configuration. Every
image is shown in a fixed 192-pixel box: small ones (CIFAR's 32x32) are enlarged with visible pixels
(``image-rendering: pixelated``) instead of blurred, and the caption sits below the picture, never on it.
"""

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resnetkit</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  #model { color: #666; margin-bottom: 1.2rem; }
  #drop { border: 2px dashed #aaa; border-radius: 8px; padding: 1.5rem; text-align: center; cursor: pointer; }
  #drop.over { border-color: #2a7; background: #f3fbf6; }
  .result { display: flex; gap: 1.5rem; margin-top: 1.2rem; align-items: flex-start;
            border-top: 1px solid #eee; padding-top: 1rem; }
  .result figure { margin: 0; width: 192px; flex: none; }
  .pictures { display: flex; gap: .5rem; }
  .result img { width: 192px; height: 192px; object-fit: contain; background: #f4f4f4; display: block; }
  .result img.pixelated { image-rendering: pixelated; }
  .result.with-cam figure { width: calc(384px + .5rem); }
  .result figcaption { margin-top: .4rem; font-weight: 600; }
  .result figcaption .sub { font-weight: 400; color: #666; display: block; }
  .bars { flex: 1; min-width: 16rem; }
  .source { color: #666; margin-bottom: .3rem; overflow-wrap: anywhere; }
  .bar { display: flex; align-items: center; gap: .5rem; margin: .25rem 0; }
  .bar .label { width: 11rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar .track { flex: 1; background: #eee; height: .9rem; border-radius: 3px; }
  .bar .fill { background: #2a7; height: 100%; border-radius: 3px; }
  .bar .pct { width: 4rem; text-align: right; font-variant-numeric: tabular-nums; }
  button.cam { margin-top: .6rem; }
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
const BOX = 192;  // the CSS size of a picture
let limits = { max_files: 64, max_request_bytes: 32 << 20 };  // the server's defaults until /v1/model says

fetch("v1/model").then(r => r.json()).then(m => {
  if (m.limits) limits = m.limits;
  const p = m.preprocess;
  document.getElementById("model").textContent =
    `${m.arch}, ${m.num_classes} classes, input ${p.input_size}x${p.input_size} (resize ${p.resize_size}), ` +
    `${m.runtime} runtime`;
}).catch(() => { document.getElementById("model").textContent = "model information unavailable"; });

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

function picture(src, alt) {
  const img = el("img");
  // Enlarged small images keep sharp pixels; photos larger than the box are scaled down smoothly.
  img.onload = () => img.classList.toggle("pixelated", img.naturalWidth < BOX && img.naturalHeight < BOX);
  img.src = src;
  img.alt = alt;
  return img;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) {
    return `HTTP ${response.status}`;
  }
}

// Many dropped images go in several requests, each within the server's --max-files and --max-request-size
// (with room for the form's own bytes); a file over the size limit goes alone and gets the server's answer.
function requests(files) {
  const groups = [];
  let group = [], bytes = 0;
  const room = limits.max_request_bytes * 0.95;
  for (const f of files) {
    const size = f.size + 512;
    if (group.length && (group.length >= limits.max_files || bytes + size > room)) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(f);
    bytes += size;
  }
  if (group.length) groups.push(group);
  return groups;
}

async function send(files) {
  if (!files.length) return;
  files = Array.from(files);
  const groups = requests(files);
  results.replaceChildren(el("p", "", "classifying..."));
  const cards = [];
  for (const [n, group] of groups.entries()) {
    const form = new FormData();
    for (const f of group) form.append("files", f, f.name);
    if (groups.length > 1) results.replaceChildren(el("p", "", `classifying... (${n + 1} of ${groups.length})`));
    try {
      const response = await fetch("v1/predict?top_k=5", { method: "POST", body: form });
      if (!response.ok) throw new Error(await errorText(response));
      const body = await response.json();
      body.predictions.forEach((p, i) => cards.push(card(p, group[i])));
    } catch (err) {
      const names = group.length === 1 ? group[0].name : `${group[0].name} and ${group.length - 1} more`;
      cards.push(el("p", "error", `${names}: ${String(err.message || err)}`));
    }
  }
  results.replaceChildren(...cards);
}

function card(p, file) {
  const row = el("div", "result"), figure = el("figure"), pictures = el("div", "pictures");
  pictures.append(picture(URL.createObjectURL(file), p.source));
  figure.append(pictures);
  const bars = el("div", "bars");
  bars.append(el("div", "source", p.source));
  if (p.error) {
    bars.append(el("div", "error", p.error));
  } else {
    const caption = el("figcaption", "top", `${p.labels[0]} ${(100 * p.probabilities[0]).toFixed(1)}%` +
                       (p.uncertain ? " (uncertain)" : ""));
    figure.append(caption);
    p.labels.forEach((label, k) => {
      const bar = el("div", "bar"), track = el("div", "track"), fill = el("div", "fill");
      fill.style.width = `${100 * p.probabilities[k]}%`;
      track.append(fill);
      bar.append(el("span", "label", label), track, el("span", "pct", `${(100 * p.probabilities[k]).toFixed(1)}%`));
      bars.append(bar);
    });
    const button = el("button", "cam", "Show Grad-CAM");
    button.onclick = () => toggleCam(row, pictures, caption, button, file);
    bars.append(button);
  }
  row.append(figure, bars);
  return row;
}

async function toggleCam(row, pictures, caption, button, file) {
  const shown = pictures.querySelector("img.overlay");
  if (shown) {
    shown.remove();
    caption.querySelector(".sub")?.remove();
    row.classList.remove("with-cam");
    button.textContent = "Show Grad-CAM";
    return;
  }
  button.disabled = true;
  button.textContent = "computing Grad-CAM...";
  const form = new FormData();
  form.append("files", file, file.name);
  try {
    const response = await fetch("v1/cam", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorText(response));
    const blob = await response.blob();
    const overlay = picture(URL.createObjectURL(blob), `Grad-CAM of ${file.name}`);
    overlay.classList.add("overlay");
    pictures.append(overlay);
    row.classList.add("with-cam");
    const explained = decodeURIComponent(response.headers.get("X-Class"));  // percent-encoded UTF-8
    caption.append(el("span", "sub", `right: where the model looked for "${explained}"`));
    button.textContent = "Hide Grad-CAM";
  } catch (err) {
    button.textContent = "Show Grad-CAM";
    caption.append(el("span", "sub error", String(err.message || err)));
  } finally {
    button.disabled = false;
  }
}
</script>
</body>
</html>
"""
