/* Progressive enhancement only: codes stay selectable and downloadable without it. */
(function () {
  if (!navigator.clipboard) return;
  Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var scope = button.closest(button.getAttribute("data-copy") === "all" ? ".codes" : ".code-row");
      var text = Array.prototype.map.call(scope.querySelectorAll(".code"), function (el) {
        return el.textContent;
      }).join("\n");
      navigator.clipboard.writeText(text).then(function () {
        var label = button.textContent;
        button.textContent = button.getAttribute("data-done");
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  });
})();
