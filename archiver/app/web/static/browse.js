// The file browser's grid: a thumbnail that cannot be made (a file that is no image, an original
// no longer kept) says so in words instead of showing a broken picture.
(function () {
  "use strict";
  function none(img) {
    const note = document.createElement("span");
    note.className = "nothumb";
    note.textContent = "no picture";
    img.replaceWith(note);
  }
  document.querySelectorAll("#grid .thumb img").forEach((img) => {
    if (img.complete && img.naturalWidth === 0 && img.src) none(img);  // failed before this ran
    else img.addEventListener("error", () => none(img));
  });
})();
