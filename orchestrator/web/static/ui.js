// Summit web UI: the little script of our own. The pages work without it (and without
// htmx); it only draws charts. Nothing here evaluates text from the page as code.
//
// A chart is an element with a `data-vega-spec` attribute holding a Vega-Lite spec as JSON
// (written by the server, escaped as any attribute). It is drawn with the vendored Vega
// renderer using Vega's expression interpreter (`ast: true`): no `eval` or `new Function`, so
// the page's Content-Security-Policy needs no 'unsafe-eval'. Without the renderer the
// element keeps its fallback content (a table).
(function () {
  "use strict";

  function drawCharts(root) {
    if (typeof window.vegaEmbed !== "function") {
      return;
    }
    var charts = root.querySelectorAll("[data-vega-spec]:not([data-drawn])");
    for (var i = 0; i < charts.length; i++) {
      var element = charts[i];
      var spec;
      try {
        spec = JSON.parse(element.getAttribute("data-vega-spec"));
      } catch (error) {
        continue; // keep the fallback
      }
      element.setAttribute("data-drawn", "1");
      var target = document.createElement("div");
      target.className = "chart";
      window
        .vegaEmbed(target, spec, {
          ast: true,
          actions: false,
          renderer: "svg",
          defaultStyle: false,
          tooltip: false,
        })
        .then(
          (function (el, drawn) {
            return function () {
              el.replaceChildren(drawn);
            };
          })(element, target)
        )
        .catch(function () {
          element.removeAttribute("data-drawn");
        });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
  });
  // htmx swaps in new content (boosted navigation, polls): draw what came with it.
  document.addEventListener("htmx:load", function (event) {
    drawCharts(event.target || document);
  });
})();
