// Optional: a Copy button beside each read-only value marked data-copy. Without JavaScript
// the value stays selectable in its read-only input.
document.querySelectorAll("[data-copy]").forEach(function (input) {
  var button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  button.setAttribute("aria-label", "Copy " + (input.getAttribute("aria-label") || "value"));
  button.addEventListener("click", function () {
    input.select();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard) { navigator.clipboard.writeText(input.value).then(done, done); }
    else { document.execCommand("copy"); done(); }
  });
  input.insertAdjacentElement("afterend", button);
});
