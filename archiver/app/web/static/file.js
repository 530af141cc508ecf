// The file page's compare viewer: slider or toggle between the original and the decoded image,
// zoom to fit, 1:1 or 2:1, protected-region boxes on or off. No libraries, nothing fetched
// from elsewhere.
(function () {
  "use strict";
  const canvas = document.getElementById("canvas");
  if (!canvas) return;
  const top = document.getElementById("img-original");
  const under = document.getElementById("img-decoded");
  const split = document.getElementById("split");
  const divider = document.getElementById("divider");
  const swap = document.getElementById("swap");
  const notes = document.getElementById("picture-notes");
  let mode = "slider", showing = "original";

  function naturalWidth() {
    return top.naturalWidth || under.naturalWidth || Number(canvas.dataset.width) || 0;
  }
  function applySplit() {
    const v = Number(split.value);
    top.style.clipPath = mode === "slider" ? `inset(0 ${100 - v}% 0 0)` : "none";
    divider.style.left = v + "%";
  }
  function applyMode() {
    canvas.classList.toggle("toggle", mode === "toggle");
    split.hidden = mode !== "slider";
    swap.hidden = mode !== "toggle";
    top.style.visibility = mode === "toggle" && showing === "decoded" ? "hidden" : "visible";
    swap.textContent = "showing: " + showing;
    applySplit();
  }
  function fitWidth() {
    // as large as the stage allows, both ways: the whole picture is visible without scrolling
    const stage = canvas.parentElement;
    const w = naturalWidth(), h = top.naturalHeight || under.naturalHeight || Number(canvas.dataset.height) || 0;
    if (!w || !h) return "";
    const room = Math.min(stage.clientWidth, (window.innerHeight * 0.78 - 4) * w / h);
    return Math.max(64, Math.floor(room)) + "px";
  }
  function setZoom(z) {
    const w = naturalWidth();
    if (z === "fit" || !w) {
      canvas.style.width = fitWidth();
      canvas.classList.remove("zoomed", "pixels");
    } else {
      canvas.style.width = (w * Number(z)) + "px";
      canvas.classList.add("zoomed");
      canvas.classList.toggle("pixels", Number(z) > 1);
    }
    canvas.dataset.zoom = z;
  }
  function press(group, btn) {
    group.querySelectorAll("button").forEach((b) => b.classList.toggle("on", b === btn));
  }
  document.querySelectorAll("[data-mode]").forEach((b) => b.addEventListener("click", () => {
    mode = b.dataset.mode; press(b.parentElement, b); applyMode();
  }));
  document.querySelectorAll("[data-zoom]").forEach((b) => b.addEventListener("click", () => {
    press(b.parentElement, b); setZoom(b.dataset.zoom);
  }));
  split.addEventListener("input", applySplit);
  swap.addEventListener("click", () => { showing = showing === "original" ? "decoded" : "original"; applyMode(); });
  document.getElementById("show-regions").addEventListener("change", (e) => {
    canvas.classList.toggle("no-regions", !e.target.checked);
  });
  // a side that cannot be shown says why (the API answers with a JSON error)
  [[top, "original"], [under, "decoded"]].forEach(([img, name]) => {
    img.addEventListener("error", () => {
      img.dataset.failed = "1";
      fetch(img.src).then((r) => r.json()).then((j) => {
        notes.textContent += `${name}: ${j.error}. `;
      }).catch(() => { notes.textContent += `${name}: not available. `; });
    });
  });
  // a reconstruction is decoded on the server the first time it is shown (seconds): say so meanwhile
  if (!under.complete) {
    const waiting = document.createElement("span");
    waiting.id = "decoding";
    waiting.textContent = "decoding the reconstruction on the server… ";
    notes.prepend(waiting);
    const done = () => waiting.remove();
    under.addEventListener("load", done);
    under.addEventListener("error", done);
  }
  [top, under].forEach((img) => img.addEventListener("load", () => {
    if ((canvas.dataset.zoom || "fit") === "fit") setZoom("fit");
  }));
  window.addEventListener("resize", () => { if ((canvas.dataset.zoom || "fit") === "fit") setZoom("fit"); });
  applyMode();
  setZoom("fit");
})();
