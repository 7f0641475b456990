// Summit web UI: the little script of our own. The pages work without it (and without
// htmx); it only draws charts. Nothing here evaluates text from the page as code.
//
// A chart is an element with a `data-vega-spec` attribute holding a Vega-Lite spec as JSON
// (written by the server, escaped as any attribute). The renderer (Vega, Vega-Lite,
// vega-embed, vendored) is loaded the first time a page has a chart: the `summit-charts`
// meta says where it is, and is absent when it was not installed. It draws with Vega's
// expression interpreter (`ast: true`): no `eval` or `new Function`, so the page's
// Content-Security-Policy needs no 'unsafe-eval'. Its loader refuses every URL: a chart
// draws the data it carries and fetches nothing. Until it is drawn (or if it cannot be) the
// element keeps its fallback content, a table.
(function () {
  "use strict";

  var RENDERER = ["vega.min.js", "vega-lite.min.js", "vega-embed.min.js"];
  var loading = null;

  function loadRenderer() {
    if (typeof window.vegaEmbed === "function") {
      return Promise.resolve();
    }
    if (loading) {
      return loading;
    }
    var meta = document.querySelector('meta[name="summit-charts"]');
    if (!meta) {
      return Promise.reject(new Error("the chart renderer is not installed"));
    }
    var base = meta.getAttribute("content");
    // One after the other: each needs the one before it.
    loading = RENDERER.reduce(function (previous, name) {
      return previous.then(function () {
        return new Promise(function (resolve, reject) {
          var script = document.createElement("script");
          script.src = base + name;
          script.onload = resolve;
          script.onerror = reject;
          document.head.appendChild(script);
        });
      });
    }, Promise.resolve());
    loading.catch(function () {
      loading = null;
    });
    return loading;
  }

  function refusingLoader() {
    var refuse = function () {
      return Promise.reject(new Error("charts load nothing"));
    };
    return { load: refuse, sanitize: refuse, http: refuse, file: refuse };
  }

  function draw(element) {
    var spec;
    try {
      spec = JSON.parse(element.getAttribute("data-vega-spec"));
    } catch (error) {
      return; // keep the fallback
    }
    element.setAttribute("data-drawn", "pending");
    var target = document.createElement("div");
    target.className = "chart";
    // Drawn off the page, then swapped in: the fallback stays until the chart is whole.
    element.appendChild(target);
    window
      .vegaEmbed(target, spec, {
        ast: true,
        actions: false,
        renderer: "svg",
        defaultStyle: false,
        tooltip: false,
        loader: refusingLoader(),
      })
      .then(function () {
        element.replaceChildren(target);
        element.setAttribute("data-drawn", "1");
      })
      .catch(function () {
        target.remove();
        element.setAttribute("data-drawn", "failed");
      });
  }

  function drawCharts(root) {
    var charts = root.querySelectorAll("[data-vega-spec]:not([data-drawn])");
    if (charts.length === 0) {
      return;
    }
    loadRenderer().then(
      function () {
        for (var i = 0; i < charts.length; i++) {
          if (!charts[i].hasAttribute("data-drawn")) {
            draw(charts[i]);
          }
        }
      },
      function () {} // no renderer: the tables stay
    );
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
  });
  // htmx swaps in new content (boosted navigation, a form's answer): draw what came with it.
  document.addEventListener("htmx:load", function (event) {
    drawCharts(event.target || document);
  });
})();
