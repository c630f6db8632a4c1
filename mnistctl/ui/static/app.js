// The draw-a-digit page: pointer strokes on a black pad (mouse, touch, pen), or a dropped/uploaded
// picture, sent as-is to the server, which makes the 784 pixels and asks every endpoint of the stack.
"use strict";

const STROKE_WIDTH = 22;  // on a 280 px pad: after scaling to MNIST's 20 px box, a 2-3 px pen line
const SEND_DELAY_MS = 350;  // wait this long after a stroke ends, so a two-stroke digit goes as one

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const seen = document.getElementById("seen");
const panels = document.getElementById("panels");
const message = document.getElementById("message");
let labels = [...Array(10).keys()].map(String);
let lastPoint = null;
let sendTimer = null;
let drawn = false;
let requestNumber = 0;

function clearPad() {
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
  drawn = false;
  message.textContent = "";
  for (const panel of panels.children) resetPanel(panel);
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width,
           y: (event.clientY - box.top) * pad.height / box.height };
}

function strokeTo(point) {
  ink.strokeStyle = "#fff";
  ink.lineWidth = STROKE_WIDTH;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(lastPoint.x, lastPoint.y);
  ink.lineTo(point.x, point.y);
  ink.stroke();
  lastPoint = point;
  drawn = true;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  clearTimeout(sendTimer);
  pad.setPointerCapture(event.pointerId);
  lastPoint = padPoint(event);
  strokeTo(lastPoint);  // a dot is a stroke too
});
pad.addEventListener("pointermove", (event) => {
  if (lastPoint === null) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const each of (events.length ? events : [event])) strokeTo(padPoint(each));
});
function endStroke() {
  if (lastPoint === null) return;
  lastPoint = null;
  clearTimeout(sendTimer);
  sendTimer = setTimeout(() => pad.toBlob((blob) => send(blob, "image/png"), "image/png"), SEND_DELAY_MS);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) sendFile(file);
  event.target.value = "";
});
pad.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("dragover"); });
pad.addEventListener("dragleave", () => pad.classList.remove("dragover"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dragover");
  const file = event.dataTransfer.files[0];
  if (file) sendFile(file);
});

function sendFile(file) {
  clearPad();
  // Whatever the file is, the server decides whether it is a picture (and says so if it is not).
  send(file, file.type.startsWith("image/") ? file.type : "application/octet-stream");
}

async function send(body, type) {
  const number = ++requestNumber;
  message.textContent = "";
  for (const panel of panels.children) { resetPanel(panel); panel.dataset.state = "pending"; }
  let answer;
  try {
    const response = await fetch("/api/predict", { method: "POST", headers: { "Content-Type": type }, body });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
  } catch (error) {
    if (number !== requestNumber) return;
    for (const panel of panels.children) delete panel.dataset.state;
    message.textContent = error.message;
    return;
  }
  if (number !== requestNumber) return;  // a newer drawing is on its way
  showSeen(answer.pixels);
  for (const result of answer.results) showResult(result);
}

function showSeen(pixels) {
  const side = 28;
  const image = new ImageData(side, side);
  pixels.forEach((value, i) => {
    const level = Math.round(value * 255);
    image.data.set([level, level, level, 255], i * 4);
  });
  const small = document.createElement("canvas");
  small.width = small.height = side;
  small.getContext("2d").putImageData(image, 0, 0);
  const view = seen.getContext("2d");
  view.imageSmoothingEnabled = false;
  view.drawImage(small, 0, 0, seen.width, seen.height);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function makePanel(endpoint) {
  const panel = element("article", "panel");
  panel.dataset.endpoint = endpoint.model;
  panel.append(
    element("h2", null, endpoint.model),
    element("p", "where", `${endpoint.platform} · ${endpoint.name}`),
    element("p", "tuning", endpoint.tuning || "untuned"),
    element("p", "answer", ""),
    element("p", "latency", ""),
    element("p", "error", ""),
  );
  const bars = element("div", "bars");
  labels.forEach((label) => {
    const bar = element("div", "bar");
    const track = element("div", "track");
    track.append(element("div", "fill"));
    bar.append(element("span", "label", label), track, element("span", "value", ""));
    bars.append(bar);
  });
  panel.append(bars);
  return panel;
}

function resetPanel(panel) {
  delete panel.dataset.digit;
  delete panel.dataset.error;
  delete panel.dataset.state;
  panel.querySelector(".answer").textContent = "";
  panel.querySelector(".latency").textContent = "";
  panel.querySelector(".error").textContent = "";
  for (const bar of panel.querySelectorAll(".bar")) {
    bar.classList.remove("top");
    bar.querySelector(".fill").style.width = "0";
    bar.querySelector(".value").textContent = "";
  }
}

function showResult(result) {
  const panel = panels.querySelector(`[data-endpoint="${CSS.escape(result.model)}"]`);
  if (!panel) return;
  resetPanel(panel);
  if (result.error) {
    panel.dataset.error = result.error;
    panel.querySelector(".error").textContent = result.error;
    return;
  }
  panel.dataset.digit = String(result.digit);
  panel.querySelector(".answer").textContent = labels[result.digit];
  panel.querySelector(".latency").textContent = `${result.latency_ms.toFixed(1)} ms round trip`;
  panel.querySelectorAll(".bar").forEach((bar, i) => {
    const p = result.probabilities[i];
    bar.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    bar.querySelector(".value").textContent = `${(p * 100).toFixed(1)}%`;
    if (i === result.digit) bar.classList.add("top");
  });
}

async function start() {
  clearPad();
  try {
    const response = await fetch("/api/stack");
    const stack = await response.json();
    labels = stack.labels;
    const count = stack.endpoints.length;
    document.getElementById("stack-line").textContent =
      `stack ${stack.stack}${stack.dataset ? ` (${stack.dataset})` : ""}: ${count} endpoint${count === 1 ? "" : "s"}`;
    for (const endpoint of stack.endpoints) panels.append(makePanel(endpoint));
    document.body.dataset.ready = "true";
  } catch (error) {
    message.textContent = `could not read the stack: ${error.message}`;
  }
}

start();
